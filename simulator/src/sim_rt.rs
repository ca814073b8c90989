//! The simulator's openraft `AsyncRuntime`: tokio for tasks, timers and channels (virtual time
//! under `start_paused`), but the "thread-local RNG" — which openraft draws election timeouts
//! from — is a ChaCha8 stream seeded by the simulation.
//!
//! Using the RNG on a thread that was never seeded with [`seed_raft_rng`] panics: it would mean
//! some openraft code ran outside the simulation thread, which is a determinism bug.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
    static RAFT_RNG: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Seeds (or reseeds) the openraft RNG of the current thread. Call before starting any Raft.
pub fn seed_raft_rng(seed: u64) {
    RAFT_RNG.with(|r| *r.borrow_mut() = Some(ChaCha8Rng::seed_from_u64(seed)));
}

fn with_rng<T>(f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
    RAFT_RNG.with(|r| {
        let mut rng = r.borrow_mut();
        f(rng.as_mut().expect("openraft drew randomness on a thread the simulator did not seed"))
    })
}

/// `AsyncRuntime::ThreadLocalRng`: a handle on the seeded per-thread stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimThreadRng;

impl RngCore for SimThreadRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(|r| r.next_u32())
    }
    fn next_u64(&mut self) -> u64 {
        with_rng(|r| r.next_u64())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|r| r.fill_bytes(dest));
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        with_rng(|r| r.fill_bytes(dest));
        Ok(())
    }
}

/// openraft on tokio with a seeded RNG; `TypeConfig<SimRuntime>` is the simulator's config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SimRuntime;

impl AsyncRuntime for SimRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = openraft::TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = SimThreadRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SimThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

/// The simulator's Raft type configuration: production types over [`SimRuntime`].
pub type SimConfig = camrec_cluster::types::TypeConfig<SimRuntime>;
/// A simulated node's Raft handle.
pub type SimRaft = openraft::Raft<SimConfig>;

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn the_stream_is_a_function_of_the_seed() {
        let draw = |seed| {
            seed_raft_rng(seed);
            let mut rng = SimRuntime::thread_rng();
            (0..4).map(|_| rng.gen_range(0..1_000_000u32)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn an_unseeded_thread_panics() {
        let r = std::thread::spawn(|| SimRuntime::thread_rng().next_u32()).join();
        assert!(r.is_err());
    }
}
