//! Waiting for something that should happen promptly: [`eventually`] under one [`patience`].

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How long a test waits for something that should happen promptly: a correctness bound,
/// generous for a loaded two-core machine, not a performance assertion. 60 s unless
/// `SWITCHBOARD_TEST_PATIENCE` (seconds) says otherwise.
pub fn patience() -> Duration {
    static PATIENCE: OnceLock<Duration> = OnceLock::new();
    *PATIENCE.get_or_init(|| {
        std::env::var("SWITCHBOARD_TEST_PATIENCE")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_secs)
    })
}

/// What a check of [`eventually`] returns: `true` / `Some(value)` when done.
pub trait Ready {
    /// What [`eventually`] returns once done.
    type Value;

    /// The value once done, `None` while not.
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();

    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;

    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `check` every 20 ms until it is ready, or panics naming `what` after [`patience`].
pub async fn eventually<R, F, Fut>(what: &str, mut check: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let deadline = Instant::now() + patience();
    loop {
        if let Some(value) = check().await.ready() {
            return value;
        }
        assert!(
            Instant::now() <= deadline,
            "timed out after {:?} waiting for: {what}",
            patience()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_ready() {
        let mut calls = 0;
        let value = eventually("the third call", || {
            calls += 1;
            let now = calls;
            async move { (now == 3).then_some(now) }
        })
        .await;
        assert_eq!(value, 3);
        eventually("a true check", || async { true }).await;
    }
}
