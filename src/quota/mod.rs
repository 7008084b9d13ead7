//! The quota: when each request to a provider may leave. The gate paces the short windows over
//! a schedule the account's jobs share, keeps the day's count, learns the margin and the rate
//! from the provider's answers, limits concurrency, and stops calls to a sick provider; the
//! retry policy says how long to wait before trying again.

pub mod adaptive;
pub mod breaker;
pub mod gate;
pub mod hints;
pub mod pace;
pub mod retry;
