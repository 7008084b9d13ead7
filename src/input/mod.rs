//! Reading the input exports: decoded, streamed, keyed, validated.

pub mod dialect;
pub mod reader;
pub mod validate;

pub use dialect::{Delimiter, Dialect, TextEncoding};
pub use reader::{ColumnMap, InputError, InputFile, Records};
