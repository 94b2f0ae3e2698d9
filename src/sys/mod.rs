//! The only place `unsafe` is allowed: socket options and filters libc has no safe API for.
