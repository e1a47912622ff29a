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

    /// The same settings as `object_store` configuration keys (`aws_endpoint`, …).
    pub fn options(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .collect()
    }
}
