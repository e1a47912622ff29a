//! A real S3-compatible server for tests: moto's server mode (`moto_server`, installed by
//! `cargo xtask test`), started on a free loopback port with one empty bucket, stopped when
//! dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::TestkitError;

/// A running `moto_server` with one bucket.
#[derive(Debug)]
pub struct Moto {
    child: std::process::Child,
    endpoint: String,
    bucket: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `moto_server` (found on `PATH`) and creates a bucket with a random name.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Unexpected`] when `moto_server` is missing or does not answer within
    /// 10 s; [`TestkitError::Http`] when the bucket cannot be created.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_program(Path::new("moto_server")).await
    }

    /// As [`Moto::start`], running `program` (a path to `moto_server`).
    ///
    /// # Errors
    ///
    /// As [`Moto::start`].
    pub async fn start_program(program: &Path) -> Result<Self, TestkitError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                TestkitError::Unexpected(format!(
                    "moto_server could not start ({error}): run `cargo xtask test`, which installs moto[server]"
                ))
            })?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: format!("koop-{:08x}", fastrand::u32(..)),
        };
        let client = reqwest::Client::new();
        let mut attempts = 0;
        while client.get(&moto.endpoint).send().await.is_err() {
            attempts += 1;
            if attempts > 200 {
                return Err(TestkitError::Unexpected(
                    "moto_server did not answer within 10 s".to_owned(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // moto checks no signature: a plain PUT creates the bucket.
        client
            .put(format!("{}/{}", moto.endpoint, moto.bucket))
            .send()
            .await?
            .error_for_status()?;
        Ok(moto)
    }

    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://{bucket}/{prefix}`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a process needs to reach the server: `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
    /// test credentials and region.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "koop-test"),
            ("AWS_SECRET_ACCESS_KEY", "koop-test-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }

    /// Writes `body` to `key` in the bucket with a signed, unconditional `PutObject`, as another
    /// client of the bucket would (moto refuses unsigned overwrites).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Unexpected`] when the store refuses.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), TestkitError> {
        use object_store::ObjectStoreExt;
        let failed = |error: object_store::Error| TestkitError::Unexpected(error.to_string());
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id("koop-test")
            .with_secret_access_key("koop-test-secret")
            .with_region("us-east-1")
            .build()
            .map_err(failed)?;
        store
            .put(&object_store::path::Path::from(key), body.into())
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// The same settings as `object_store` configuration keys (`aws_endpoint`, …).
    pub fn options(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .collect()
    }
}

/// Faults a [`StoreProxy`] injects, switched on and off while a test runs.
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Answer `503 Slow Down` to every write of a data object (any `PUT`/`POST` but those of
    /// manifests `*.json` and leases `.leases/…`).
    pub fail_data_writes: std::sync::atomic::AtomicBool,
    /// Forward uploads (`PUT`) of data objects with only the first half of their body: the store
    /// then holds a truncated object although the upload seemed to succeed.
    pub truncate_data_writes: std::sync::atomic::AtomicBool,
    /// Answer `503 Slow Down` to every request.
    pub fail_everything: std::sync::atomic::AtomicBool,
    /// Requests answered 503 by the proxy itself.
    pub failed: std::sync::atomic::AtomicU64,
    /// Requests forwarded.
    pub forwarded: std::sync::atomic::AtomicU64,
}

/// A loopback HTTP proxy in front of a [`Moto`] that forwards every request and injects
/// [`StoreFaults`]: the store failing or truncating an upload, as a real one sometimes does.
#[derive(Debug)]
pub struct StoreProxy {
    endpoint: String,
    /// The faults; set them while the test runs.
    pub faults: std::sync::Arc<StoreFaults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StoreProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StoreProxy {
    /// Starts a proxy on a free loopback port forwarding to `moto`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when no port can be bound.
    pub async fn start(moto: &Moto) -> Result<Self, TestkitError> {
        use std::sync::atomic::Ordering;
        let faults = std::sync::Arc::new(StoreFaults::default());
        let upstream = moto.endpoint().to_owned();
        let client = reqwest::Client::new();
        let state = (faults.clone(), upstream, client);
        let router = axum::Router::new().fallback(
            |axum::extract::State((faults, upstream, client)): axum::extract::State<(
                std::sync::Arc<StoreFaults>,
                String,
                reqwest::Client,
            )>,
             request: axum::extract::Request| async move {
                let (parts, body) = request.into_parts();
                let path = parts.uri.path().to_owned();
                let write = matches!(parts.method.as_str(), "PUT" | "POST");
                let is_json = Path::new(&path)
                    .extension()
                    .is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
                let data_write =
                    write && !is_json && !path.contains("/.leases/");
                let slow_down = || {
                    faults.failed.fetch_add(1, Ordering::SeqCst);
                    axum::response::Response::builder()
                        .status(503)
                        .header("content-type", "application/xml")
                        .body(axum::body::Body::from(
                            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                        ))
                        .unwrap_or_default()
                };
                if faults.fail_everything.load(Ordering::SeqCst)
                    || (data_write && faults.fail_data_writes.load(Ordering::SeqCst))
                {
                    return slow_down();
                }
                let Ok(mut bytes) = axum::body::to_bytes(body, 256 * 1024 * 1024).await else {
                    return slow_down();
                };
                // Part uploads (`PUT`), not the `POST` that completes them.
                if data_write
                    && parts.method == axum::http::Method::PUT
                    && faults.truncate_data_writes.load(Ordering::SeqCst)
                {
                    bytes = bytes.slice(..bytes.len() / 2);
                }
                let target = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map_or("/", axum::http::uri::PathAndQuery::as_str)
                );
                let mut forwarded = client.request(parts.method.clone(), target);
                for (name, value) in &parts.headers {
                    if !matches!(name.as_str(), "host" | "content-length" | "transfer-encoding") {
                        forwarded = forwarded.header(name, value);
                    }
                }
                faults.forwarded.fetch_add(1, Ordering::SeqCst);
                let Ok(answer) = forwarded.body(bytes).send().await else {
                    return slow_down();
                };
                let mut response = axum::response::Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
                        response = response.header(name, value);
                    }
                }
                let body = answer.bytes().await.unwrap_or_default();
                response
                    .body(axum::body::Body::from(body))
                    .unwrap_or_default()
            },
        );
        let router = router.with_state(state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            endpoint,
            faults,
            task,
        })
    }

    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// [`Moto::env`] with the proxy as the endpoint.
    pub fn env(&self, moto: &Moto) -> Vec<(String, String)> {
        moto.env()
            .into_iter()
            .map(|(key, value)| {
                if key == "AWS_ENDPOINT" {
                    (key, self.endpoint.clone())
                } else {
                    (key, value)
                }
            })
            .collect()
    }
}
