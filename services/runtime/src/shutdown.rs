//! One cancellation signal per process, fired by SIGTERM/SIGINT (or by a test), that every
//! listener and connection watches. A role drains by watching it: readiness goes false first, then
//! listeners stop accepting, then open work finishes within the grace period.

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled once, when the process (or the embedding test) asks everything to stop.
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal fired by SIGTERM or SIGINT (Ctrl-C).
    pub fn on_signals() -> Self {
        let s = Self::new();
        let t = s.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining");
            t.cancel();
        });
        s
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the shutdown has been triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// An owned future completing on shutdown, for APIs that take `'static` futures.
    pub fn wait_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// The underlying token, for child tokens.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
