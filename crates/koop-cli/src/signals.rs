//! Ctrl-C and SIGTERM during `get` and `mirror`: the first stops the work cleanly (exports this
//! process created are cancelled on the server, downloads are kept for the next run, locks are
//! released), the second exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

/// Exit code after SIGINT (Ctrl-C): 128 + 2.
const SIGINT_EXIT: u8 = 130;
/// Exit code after SIGTERM: 128 + 15.
const SIGTERM_EXIT: u8 = 143;

/// Watches for SIGINT and SIGTERM while a command runs.
pub(crate) struct Interrupt {
    token: CancellationToken,
    exit_code: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupt {
    /// Starts watching (in the current Tokio runtime).
    pub(crate) fn install() -> Self {
        let token = CancellationToken::new();
        let exit_code = Arc::new(AtomicU8::new(0));
        let (cancel, code) = (token.clone(), exit_code.clone());
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                let received = next_signal().await;
                if first {
                    code.store(received, Ordering::SeqCst);
                    tracing::warn!(
                        "stopping; downloads are kept for the next run (press again to quit now)"
                    );
                    cancel.cancel();
                    first = false;
                } else {
                    eprintln!("koop: interrupted again, quitting at once");
                    std::process::exit(i32::from(received));
                }
            }
        });
        Self {
            token,
            exit_code,
            task,
        }
    }

    /// The token the work stops on.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// 130 after SIGINT, 143 after SIGTERM; `None` when no signal came.
    pub(crate) fn exit_code(&self) -> Option<u8> {
        match self.exit_code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The exit code of the next SIGINT or SIGTERM.
async fn next_signal() -> u8 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        if let (Ok(mut terminate), Ok(mut interrupt)) = (terminate, interrupt) {
            tokio::select! {
                _ = terminate.recv() => SIGTERM_EXIT,
                _ = interrupt.recv() => SIGINT_EXIT,
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
            SIGINT_EXIT
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        SIGINT_EXIT
    }
}
