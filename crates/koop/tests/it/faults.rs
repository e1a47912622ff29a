//! Every testkit fault ends in its typed error or in a success (retry, resume), and leaves the
//! cache exactly as it was: no new entry, no temporary file, earlier entries intact.

use std::time::Duration;

use anyhow::{Context, Result};
use koop::koop_api::Error as ApiError;
use koop::koop_export::Error as ExportError;
use koop::{Error, ExportOptions, ExportState, FetchOutcome, Koop, Quiet};
use koop_testkit::{
    DropDownloadFault, ExportFaults, ExportOutcome, RateLimitFault, RequestFaults,
    ServerErrorFault, TestServer, ZipFault,
};

use crate::{koop, snapshot};

/// A server, a cache holding layer 1001 already, and a `Koop` on both.
struct Fixture {
    server: TestServer,
    _dir: tempfile::TempDir,
    koop: Koop,
}

async fn fixture(options: ExportOptions) -> Result<Fixture> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), options)?;
    koop.fetch_layer(1001, &Quiet).await?;
    Ok(Fixture {
        server,
        _dir: dir,
        koop,
    })
}

impl Fixture {
    /// Fetches layer 1002 expecting an error, and checks the cache is exactly as before.
    async fn fails(&self) -> Result<Error> {
        let root = self.koop.cache().root().to_owned();
        let before = snapshot(&root)?;
        let error = self
            .koop
            .fetch_layer(1002, &Quiet)
            .await
            .expect_err("the fault ends the fetch");
        assert_eq!(
            snapshot(&root)?,
            before,
            "the cache is unchanged after {error}"
        );
        assert!(
            std::fs::read_dir(root.join(".staging"))?.next().is_none(),
            "no temporary files"
        );
        let report = self.koop.cache().verify()?;
        assert!(report.corrupt.is_empty());
        assert_eq!(report.ok.len(), 1, "the earlier entry is intact");
        Ok(error)
    }

    fn export_fault(&self, faults: ExportFaults) {
        self.server.set_export_faults(1002, faults);
    }
}

#[tokio::test]
async fn a_429_storm_ends_rate_limited() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    fixture.server.set_request_faults(RequestFaults {
        rate_limit: Some(RateLimitFault {
            count: u32::MAX,
            retry_after_secs: 0,
        }),
        ..RequestFaults::default()
    });
    let error = fixture.fails().await?;
    assert!(
        matches!(error, Error::Api(ApiError::RateLimited { attempts: 3, .. })),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_server_error_is_retried_and_the_fetch_succeeds() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    fixture.server.set_request_faults(RequestFaults {
        server_error: Some(ServerErrorFault {
            on_request: 1,
            times: 1,
            status: 503,
        }),
        ..RequestFaults::default()
    });
    let fetched = fixture.koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(fetched.outcome, FetchOutcome::Downloaded);
    assert_eq!(fixture.server.counters().server_errors, 1);
    Ok(())
}

#[tokio::test]
async fn exports_ending_in_error_or_cancelled_are_typed_errors() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    for (outcome, state) in [
        (ExportOutcome::Error, ExportState::Error),
        (ExportOutcome::Cancelled, ExportState::Cancelled),
    ] {
        fixture.export_fault(ExportFaults {
            outcome,
            ..ExportFaults::default()
        });
        let error = fixture.fails().await?;
        match error {
            Error::Export(ExportError::ExportFailed {
                layer_id: 1002,
                state: got,
                ..
            }) => {
                assert_eq!(got, state);
            }
            other => panic!("expected ExportFailed, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_export_that_never_completes_hits_the_deadline_and_is_cancelled() -> Result<()> {
    let fixture = fixture(ExportOptions {
        deadline: Duration::from_secs(1),
        ..ExportOptions::default()
    })
    .await?;
    fixture.export_fault(ExportFaults {
        outcome: ExportOutcome::NeverComplete,
        ..ExportFaults::default()
    });
    let error = fixture.fails().await?;
    assert!(
        matches!(
            error,
            Error::Export(ExportError::DeadlineExceeded { layer_id: 1002, .. })
        ),
        "{error:?}"
    );
    assert_eq!(fixture.server.counters().export_cancels, 1);
    Ok(())
}

#[tokio::test]
async fn a_dropped_download_resumes_with_a_range_request() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    let zip_len = std::fs::metadata(fixture.server.export_zip(1002).await?)?.len();
    // Each of two downloads breaks after a quarter of the ZIP: the first request and one resume.
    fixture.export_fault(ExportFaults {
        drop_download: Some(DropDownloadFault {
            after_bytes: zip_len / 4,
            times: 2,
        }),
        ..ExportFaults::default()
    });
    let fetched = fixture.koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(fetched.outcome, FetchOutcome::Downloaded);
    let counters = fixture.server.counters();
    assert_eq!(
        counters.range_requests, 2,
        "both resumes asked for the rest only"
    );
    assert_eq!(
        counters.downloads,
        1 + 3,
        "layer 1001, then 1002 once plus two resumes"
    );
    assert!(fixture.koop.cache().verify()?.corrupt.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_download_that_keeps_breaking_is_a_download_error() -> Result<()> {
    let fixture = fixture(ExportOptions {
        resume_attempts: 2,
        ..ExportOptions::default()
    })
    .await?;
    fixture.export_fault(ExportFaults {
        drop_download: Some(DropDownloadFault {
            after_bytes: 1_000,
            times: u32::MAX,
        }),
        ..ExportFaults::default()
    });
    let error = fixture.fails().await?;
    assert!(
        matches!(
            error,
            Error::Export(ExportError::Download { attempts: 3, .. })
        ),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn damaged_and_hostile_zips_are_refused() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    let escape = fixture
        .koop
        .cache()
        .root()
        .join(".staging/../../koop-escape.txt");
    for fault in [
        ZipFault::Truncated,
        ZipFault::Corrupted,
        ZipFault::PathTraversal,
        ZipFault::AbsolutePath,
        ZipFault::Empty,
        ZipFault::NoLayerFile,
        ZipFault::TwoLayerFiles,
    ] {
        fixture.export_fault(ExportFaults {
            zip: fault,
            ..ExportFaults::default()
        });
        let error = fixture.fails().await?;
        let Error::Export(error) = error else {
            panic!("{fault:?}: expected an export error, got {error:?}");
        };
        let expected = match (&fault, &error) {
            (ZipFault::Truncated | ZipFault::Corrupted, ExportError::CorruptZip { .. })
            | (ZipFault::Empty | ZipFault::NoLayerFile, ExportError::NoLayerFile { .. })
            | (ZipFault::TwoLayerFiles, ExportError::SeveralLayerFiles { .. }) => true,
            (ZipFault::PathTraversal, ExportError::UnsafeEntry { name, .. }) => {
                name == "../../koop-escape.txt"
            }
            (ZipFault::AbsolutePath, ExportError::UnsafeEntry { name, .. }) => {
                name == "/tmp/koop-absolute.txt"
            }
            _ => false,
        };
        assert!(expected, "{fault:?} ended in {error:?}");
        assert!(error.to_string().contains("layer 1002"), "{error}");
    }
    assert!(!escape.exists());
    assert!(!std::path::Path::new("/tmp/koop-absolute.txt").exists());
    Ok(())
}

#[tokio::test]
async fn unknown_layers_and_point_clouds_are_typed_errors_without_exports() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    let root = fixture.koop.cache().root().to_owned();
    let before = snapshot(&root)?;
    let error = fixture
        .koop
        .fetch_layer(424_242, &Quiet)
        .await
        .expect_err("unknown");
    assert!(
        matches!(error, Error::Api(ApiError::NotFound { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("424242"));
    let error = fixture
        .koop
        .fetch_layer(1007, &Quiet)
        .await
        .expect_err("point cloud");
    assert!(
        matches!(&error, Error::Export(ExportError::UnsupportedKind { kind, .. }) if kind == "pointcloud"),
        "{error:?}"
    );
    assert_eq!(fixture.server.exports_created_for(1007), 0);
    assert_eq!(snapshot(&root)?, before);
    Ok(())
}

#[tokio::test]
async fn a_download_redirected_to_object_storage_succeeds_without_the_key() -> Result<()> {
    let fixture = fixture(ExportOptions::default()).await?;
    fixture.export_fault(ExportFaults {
        redirect_download: true,
        ..ExportFaults::default()
    });
    let fetched = fixture.koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(fetched.outcome, FetchOutcome::Downloaded);
    let storage = fixture
        .server
        .requests()
        .into_iter()
        .filter(|request| request.listener == koop_testkit::Listener::Storage)
        .collect::<Vec<_>>();
    let first = storage.first().context("the storage listener was used")?;
    assert_eq!(first.authorization, None);
    Ok(())
}
