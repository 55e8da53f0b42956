pub mod error;
pub mod fsutil;
pub mod log;
