//! Helpers every layer may use, and that use nothing of the product: private files, times, the
//! run's stop signal.

pub mod fs;
pub mod stop;
pub mod sync;
pub mod time;
