//! Transport for rthreads: a full mesh of TCP connections (`TCP_NODELAY`) carrying
//! length-framed messages.
//!
//! - [`auth`]: the challenge–response MAC that opens every connection;
//! - [`codec`]: the bounds-checked binary encoding of control messages;
//! - [`frame`]: frames and the non-blocking connection buffers the service thread polls;
//! - [`mesh`]: bootstrap, the handshake that refuses another binary, and the start-up barrier.
//! - `fuzzing` (with the `fuzzing` feature): the harnesses the fuzz targets and the corpus replay
//!   tests share.

pub mod auth;
pub mod codec;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod mesh;

pub use auth::{AuthError, HandshakeError, Secret, SecretError};
pub use codec::{DecodeError, Reader, Writer};
pub use frame::{Conn, FrameBuf, ReadStatus, SendQueue};
pub use mesh::{BinaryId, Hello, HelloError, Mesh, MeshConfig, MeshError, Refusal};
