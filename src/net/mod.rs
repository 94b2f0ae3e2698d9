//! rtnetlink: interfaces, addresses and link state as events.
