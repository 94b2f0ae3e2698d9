//! The shape every stepped core has, so that one loop can drive them all.
//!
//! A [`Machine`] is fed inputs with the time they happened and answers with outputs; it
//! owns no clock, so it also says when it next wants to be woken ([`Machine::next_deadline`])
//! and what input that wake-up is ([`Machine::timer_input`]). The `lb` crate's driver loop
//! (`lb::driver::run`) waits for the earlier of that deadline and the next input from the
//! task's I/O, steps the machine, and hands the outputs to the task **in the order given**:
//! a machine that needs one output carried out before another (a lease withdrawn before the
//! acknowledgement that lets the leader give the IP away; a term on disk before the vote that
//! depends on it) emits them in that order, and no driver reorders them.

use std::time::Instant;

/// A pure, stepped state machine (holo's and RustyBGP's "sans-I/O" shape).
pub trait Machine {
    type Input;
    type Output;

    /// Feeds one input at `now`. The outputs are to be carried out in order.
    fn step(&mut self, now: Instant, input: Self::Input) -> Vec<Self::Output>;

    /// The earliest time the machine wants [`Machine::timer_input`] fed to it; `None` when it
    /// waits for inputs only. A driver may wake later (it is busy) but never needs to wake
    /// earlier.
    fn next_deadline(&self) -> Option<Instant>;

    /// The input that tells the machine its deadline has come (usually `Input::Tick`).
    fn timer_input(&self) -> Self::Input;
}
