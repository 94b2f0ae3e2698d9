//! The one loop every protocol task runs (holo-protocol's event loop is the model).
//!
//! A task is a pure [`Machine`] (the decisions) and a [`Shell`] (its sockets and channels).
//! [`run`] waits for whichever comes first, the shell's next input or the machine's
//! deadline, steps the machine with the time it happened, and hands the outputs to the shell
//! to carry out in the order the machine gave them. No shell reorders, drops or invents
//! inputs on the machine's behalf: what must happen before what is the machine's decision.
//!
//! ```text
//!   shell.next_input() ──▶ ┌──────────┐ ── outputs, in order ──▶ shell.carry()
//!   machine deadline ────▶ │  step()  │                          (sockets, channels, disk)
//!        (timer_input)     └──────────┘
//! ```
//!
//! Time: [`now`] is the tokio clock as a `std::time::Instant`; outside paused-time tests it
//! is `std::time::Instant::now()`.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Instant;

pub use lb_core::machine::Machine;

/// The clock every driver steps its machine with: tokio's, as a `std::time::Instant`.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The I/O half of a task: where a machine's inputs come from and its outputs go.
pub trait Shell<M: Machine> {
    /// The next input from the outside (a frame, a datagram, a message from another task).
    /// `None` ends the task: the inputs are closed. It races the machine's deadline, so it
    /// must be cancel-safe (tokio's `recv`s and readiness waits are).
    fn next_input(&mut self) -> impl Future<Output = Option<M::Input>> + Send;

    /// Carries out one step's outputs, in order. The machine is there to be read (its
    /// state after the step), not stepped. `Break` ends the task.
    fn carry(
        &mut self,
        now: Instant,
        machine: &M,
        outputs: Vec<M::Output>,
    ) -> impl Future<Output = ControlFlow<()>> + Send;
}

/// Runs `machine` with `shell` until the shell's inputs close or `carry` breaks.
pub async fn run<M, S>(machine: &mut M, shell: &mut S)
where
    M: Machine + Send,
    S: Shell<M> + Send,
{
    loop {
        let deadline = machine.next_deadline();
        let input = tokio::select! {
            biased;
            input = shell.next_input() => match input {
                Some(input) => input,
                None => return,
            },
            () = sleep_until(deadline) => machine.timer_input(),
        };
        let now = now();
        let outputs = machine.step(now, input);
        if shell.carry(now, machine, outputs).await.is_break() {
            return;
        }
    }
}

/// Sleeps until `deadline`; forever when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Counts inputs; wants a tick `period` after each step until it has seen `ticks` of them.
    struct Counter {
        period: Duration,
        last: Option<Instant>,
        ticks: u32,
        seen: Vec<&'static str>,
    }

    impl Machine for Counter {
        type Input = &'static str;
        type Output = String;
        fn step(&mut self, now: Instant, input: &'static str) -> Vec<String> {
            self.last = Some(now);
            self.seen.push(input);
            if input == "tick" {
                self.ticks = self.ticks.saturating_sub(1);
            }
            vec![format!("{input}-a"), format!("{input}-b")]
        }
        fn next_deadline(&self) -> Option<Instant> {
            (self.ticks > 0).then(|| self.last.map_or_else(now, |l| l + self.period))
        }
        fn timer_input(&self) -> &'static str {
            "tick"
        }
    }

    struct Chan {
        rx: mpsc::Receiver<&'static str>,
        carried: Vec<String>,
        stop_after: usize,
    }

    impl Shell<Counter> for Chan {
        async fn next_input(&mut self) -> Option<&'static str> {
            self.rx.recv().await
        }
        async fn carry(&mut self, _: Instant, _: &Counter, out: Vec<String>) -> ControlFlow<()> {
            self.carried.extend(out);
            if self.carried.len() >= self.stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_feed_the_timer_input_and_outputs_are_carried_in_order() {
        let (tx, rx) = mpsc::channel(4);
        let mut m = Counter {
            period: Duration::from_millis(50),
            last: None,
            ticks: 2,
            seen: vec![],
        };
        let mut s = Chan {
            rx,
            carried: vec![],
            stop_after: 6,
        };
        tx.send("hello").await.unwrap();
        run(&mut m, &mut s).await;
        // The queued input wins over a due deadline (biased), then two ticks; order kept.
        assert_eq!(m.seen, ["hello", "tick", "tick"]);
        assert_eq!(
            s.carried,
            ["hello-a", "hello-b", "tick-a", "tick-b", "tick-a", "tick-b"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_inputs_end_the_task_when_no_deadline_is_left() {
        let (tx, rx) = mpsc::channel(1);
        let mut m = Counter {
            period: Duration::from_millis(50),
            last: None,
            ticks: 0,
            seen: vec![],
        };
        let mut s = Chan {
            rx,
            carried: vec![],
            stop_after: usize::MAX,
        };
        drop(tx);
        run(&mut m, &mut s).await;
        assert!(m.seen.is_empty());
    }
}
