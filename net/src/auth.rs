//! Connection authentication: a challenge–response MAC over a cluster secret, in both directions.
//!
//! Every connection between two rthreads nodes (the start-up mesh and the direct connections made
//! later) begins with this exchange, before any other byte is trusted:
//!
//! 1. the accepting side sends `Challenge { server_nonce }` (16 fresh random bytes);
//! 2. the connecting side answers `Response { client_nonce, mac_c }` where
//!    `mac_c = HMAC-SHA256(key, "rthreads/1 client" ‖ server_nonce ‖ client_nonce)`;
//! 3. the accepting side checks `mac_c` in constant time. A wrong MAC is answered with a `Reject`
//!    saying authentication failed, logged by the caller, and the connection is closed: the peer
//!    never sees a page, a hello or an address table. A right one is answered with
//!    `Proof { mac_s }`, `mac_s = HMAC-SHA256(key, "rthreads/1 server" ‖ client_nonce ‖ server_nonce)`;
//! 4. the connecting side checks `mac_s`, so it does not hand its memory to an impostor either.
//!
//! Fresh nonces on both sides make a recorded exchange useless for a later connection. The MAC
//! authenticates the *start* of the connection only; the traffic after it is neither encrypted nor
//! integrity-protected (see "Threat model" in `docs/security.md`).
//!
//! The key is never the secret's text itself: [`Secret::from_text`] hashes the text with a
//! domain label, so a passphrase, a hex string or a file's contents all make a 256-bit key.

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::codec::{DecodeError, Reader, Writer};
use crate::frame::{read_frame, write_frame};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes in a nonce.
pub const NONCE: usize = 16;
/// Bytes in a MAC.
pub const MAC: usize = 32;

const TAG_CHALLENGE: u8 = 0x41;
const TAG_RESPONSE: u8 = 0x42;
const TAG_PROOF: u8 = 0x43;
/// Same tag and layout as the mesh's refusal, so either side reads both the same way.
pub(crate) const TAG_REJECT: u8 = 3;
const MAGIC: u32 = 0x5254_4155; // "RTAU"

/// How long either side waits for the other's next authentication message.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The fewest bytes a secret given by a person (`RTHREADS_SECRET`, a secret file) may have, after
/// surrounding whitespace is trimmed: a shorter one could be found offline by trying every
/// candidate against one recorded handshake.
pub const MIN_SECRET_BYTES: usize = 16;

/// How to make a secret that passes [`Secret::from_setting`], for error messages.
const MAKE_ONE: &str = "make a good one with `rthreads secret` (e.g. `export RTHREADS_SECRET=$(rthreads secret)`, \
     or `rthreads secret --file ~/.rthreads/secret` for a file)";

/// Why a secret could not be made from a text or read from a file.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// [`Secret::from_text`] of an empty or blank text.
    #[error("the cluster secret is empty")]
    Empty,
    /// [`Secret::from_setting`] of an empty or blank text (a variable that expanded to nothing).
    #[error("the cluster secret is empty or blank; it needs at least {MIN_SECRET_BYTES} bytes: {MAKE_ONE}")]
    Blank,
    /// [`Secret::from_setting`] of fewer than [`MIN_SECRET_BYTES`] bytes.
    #[error(
        "the cluster secret is too short ({len} byte{}; a short one can be found offline from one \
         recorded handshake); it needs at least {MIN_SECRET_BYTES} bytes: {MAKE_ONE}",
        plural(*.len)
    )]
    TooShort {
        /// Bytes the secret has, surrounding whitespace trimmed.
        len: usize,
    },
    /// [`Secret::from_hex`] of anything but 64 hex digits.
    #[error("expected 64 hex digits")]
    NotHex,
    /// A secret file that cannot be read.
    #[error("secret file {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// A secret file that is a directory, a device…
    #[error("secret file {}: not a regular file", .path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// A secret file the group or others may read or write.
    #[error(
        "secret file {} has mode {mode:03o}: others may read it; run `chmod 600 {}`",
        .path.display(),
        .path.display()
    )]
    OpenToOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file whose contents [`Secret::from_setting`] refuses.
    #[error("secret file {}: {source}", .path.display())]
    Weak {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents: [`SecretError::Blank`] or [`SecretError::TooShort`].
        source: Box<SecretError>,
    },
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The cluster secret: a 256-bit key every node of one run shares.
///
/// Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the given buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

impl Secret {
    /// A new random secret, from the kernel's random number generator.
    ///
    /// # Errors
    /// If `getrandom(2)` fails.
    pub fn generate() -> io::Result<Secret> {
        let mut k = [0u8; 32];
        random_bytes(&mut k)?;
        Ok(Secret(k))
    }

    /// The key made from a secret's text (surrounding whitespace ignored), whatever its length.
    /// Secrets that people give go through [`Secret::from_setting`] instead, which refuses weak
    /// ones.
    ///
    /// # Errors
    /// [`SecretError::Empty`] for an empty or blank text.
    pub fn from_text(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let mut h = Sha256::new();
        h.update(b"rthreads cluster secret v1\0");
        h.update(text.as_bytes());
        Ok(Secret(h.finalize().into()))
    }

    /// The key of a secret as a person gives it (the value of `RTHREADS_SECRET`, or a secret
    /// file's contents): 64 hex digits are the key itself (what [`Secret::to_hex`] and
    /// `rthreads secret` write), any other text is hashed with [`Secret::from_text`]. Surrounding
    /// whitespace is ignored.
    ///
    /// # Errors
    /// Fewer than [`MIN_SECRET_BYTES`] bytes are left once whitespace is trimmed:
    /// [`SecretError::Blank`] for none, [`SecretError::TooShort`] for some. Their messages say
    /// how to make a good secret.
    pub fn from_setting(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Blank);
        }
        if text.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort { len: text.len() });
        }
        Secret::from_hex(text).or_else(|_| Secret::from_text(text))
    }

    /// Reads a secret from a file that only its owner may read or write; its contents are read
    /// as by [`Secret::from_setting`].
    ///
    /// # Errors
    /// The file cannot be read ([`SecretError::Unreadable`]), is not a regular file
    /// ([`SecretError::NotAFile`]), is open to the group or to others
    /// ([`SecretError::OpenToOthers`]: its mode must be `0600` or `0400`), or holds a secret that
    /// is empty or too short ([`SecretError::Weak`]): the message says which and how to fix it.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let unreadable = |source| SecretError::Unreadable { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile { path: path.to_owned() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::OpenToOthers { path: path.to_owned(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Secret::from_setting(&text)
            .map_err(|e| SecretError::Weak { path: path.to_owned(), source: Box::new(e) })
    }

    /// The key as 64 hex digits: a text that [`Secret::from_hex`] turns back into this secret
    /// (for handing the secret to the nodes a launcher starts).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The inverse of [`Secret::to_hex`].
    ///
    /// # Errors
    /// [`SecretError::NotHex`] for anything but 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Secret, SecretError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SecretError::NotHex);
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| SecretError::NotHex)?;
        }
        Ok(Secret(k))
    }

    fn mac(&self, label: &[u8], a: &[u8; NONCE], b: &[u8; NONCE]) -> HmacSha256 {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        m.update(a);
        m.update(b);
        m
    }
}

const CLIENT: &[u8] = b"rthreads/1 client";
const SERVER: &[u8] = b"rthreads/1 server";

/// A fresh nonce.
///
/// # Errors
/// If `getrandom(2)` fails.
pub fn nonce() -> io::Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    random_bytes(&mut n)?;
    Ok(n)
}

/// The accepting side's first frame.
pub fn challenge_frame(server_nonce: &[u8; NONCE]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(TAG_CHALLENGE).u32(MAGIC).raw(server_nonce);
    w.finish()
}

fn reason_of(body: &[u8]) -> Option<String> {
    if body.first() != Some(&TAG_REJECT) {
        return None;
    }
    Some(Reader::new(&body[1..]).str().unwrap_or("(unreadable reason)").to_owned())
}

fn nonce_from(r: &mut Reader<'_>) -> Result<[u8; NONCE], DecodeError> {
    let b = r.raw(NONCE)?;
    Ok(b.try_into().expect("NONCE bytes"))
}

/// Why an authentication exchange failed, on either side ([`connect_side`], [`accept_side`],
/// [`respond`], [`check_proof`]).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The other side refused this one, with the reason it sent (for a wrong secret, the text of
    /// [`AuthError::WrongSecret`]).
    #[error("refused: {0}")]
    Refused(String),
    /// This side refused the other: its response is malformed or made with another secret. The
    /// other side has been sent the reason.
    #[error(transparent)]
    Rejected(#[from] AuthError),
    /// The first frame from the accepting side is not an authentication challenge.
    #[error("the peer is not an rthreads node (no authentication challenge)")]
    NoChallenge,
    /// A challenge frame of the wrong length.
    #[error("bad challenge: {0}")]
    BadChallenge(DecodeError),
    /// The accepting side answered the response with something other than a proof.
    #[error("no authentication proof from the peer")]
    NoProof,
    /// A proof frame of the wrong length.
    #[error("bad authentication proof: {0}")]
    BadProof(DecodeError),
    /// The accepting side's proof is wrong: it does not know the cluster secret.
    #[error("the peer failed to prove it knows the cluster secret")]
    ForgedProof,
    /// What the connecting side sent is not a frame of the rthreads protocol at all.
    #[error("not an rthreads peer ({0})")]
    NotAPeer(io::Error),
    /// A socket error or a timeout, at the step named.
    #[error("{step}: {source}")]
    Io {
        /// What this side was doing: "no authentication challenge", "sending the proof"…
        step: &'static str,
        /// The socket's error.
        source: io::Error,
    },
}

impl HandshakeError {
    fn io(step: &'static str) -> impl FnOnce(io::Error) -> HandshakeError {
        move |source| HandshakeError::Io { step, source }
    }
}

/// What the connecting side answers a challenge with: the response frame, the server's nonce and
/// its own (both needed to check the proof that follows).
pub type Response = (Vec<u8>, [u8; NONCE], [u8; NONCE]);

/// Connecting side: reads the challenge in `body` and makes the response frame.
///
/// # Errors
/// `body` is a refusal ([`HandshakeError::Refused`], with its reason) or not a challenge
/// ([`HandshakeError::NoChallenge`], [`HandshakeError::BadChallenge`]); or no nonce could be
/// drawn.
pub fn respond(secret: &Secret, body: &[u8]) -> Result<Response, HandshakeError> {
    if let Some(reason) = reason_of(body) {
        return Err(HandshakeError::Refused(reason));
    }
    let mut r = Reader::new(body);
    if r.u8().ok() != Some(TAG_CHALLENGE) || r.u32().ok() != Some(MAGIC) {
        return Err(HandshakeError::NoChallenge);
    }
    let server_nonce = nonce_from(&mut r).map_err(HandshakeError::BadChallenge)?;
    r.end().map_err(HandshakeError::BadChallenge)?;
    let client_nonce = nonce().map_err(HandshakeError::io("random nonce"))?;
    let mac = secret.mac(CLIENT, &server_nonce, &client_nonce).finalize().into_bytes();
    let mut w = Writer::new();
    w.u8(TAG_RESPONSE).raw(&client_nonce).raw(&mac);
    Ok((w.finish(), server_nonce, client_nonce))
}

/// Why the accepting side refused a connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer sent something that is not an authentication response (garbage, another
    /// protocol, an old version).
    #[error("not an rthreads authentication response ({0})")]
    Malformed(String),
    /// The peer's MAC is wrong: it does not know the cluster secret.
    #[error("authentication failed: wrong cluster secret")]
    WrongSecret,
}

/// Accepting side: checks the response in `body` to the challenge made with `server_nonce`;
/// on success returns the proof frame to send back.
///
/// # Errors
/// [`AuthError`]: the caller sends [`reject_frame`] and closes the connection.
pub fn verify(secret: &Secret, server_nonce: &[u8; NONCE], body: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut r = Reader::new(body);
    if r.u8().ok() != Some(TAG_RESPONSE) {
        return Err(AuthError::Malformed("unexpected first message".into()));
    }
    let client_nonce = nonce_from(&mut r).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let mac = r.raw(MAC).map_err(|e| AuthError::Malformed(e.to_string()))?;
    r.end().map_err(|e| AuthError::Malformed(e.to_string()))?;
    secret.mac(CLIENT, server_nonce, &client_nonce).verify_slice(mac).map_err(|_| AuthError::WrongSecret)?;
    let proof = secret.mac(SERVER, &client_nonce, server_nonce).finalize().into_bytes();
    let mut w = Writer::new();
    w.u8(TAG_PROOF).raw(&proof);
    Ok(w.finish())
}

/// Connecting side: checks the accepting side's proof.
///
/// # Errors
/// A refusal ([`HandshakeError::Refused`], with its reason), something else than a proof
/// ([`HandshakeError::NoProof`], [`HandshakeError::BadProof`]), or a proof that does not match
/// ([`HandshakeError::ForgedProof`]): the peer does not know the secret.
pub fn check_proof(
    secret: &Secret,
    server_nonce: &[u8; NONCE],
    client_nonce: &[u8; NONCE],
    body: &[u8],
) -> Result<(), HandshakeError> {
    if let Some(reason) = reason_of(body) {
        return Err(HandshakeError::Refused(reason));
    }
    let mut r = Reader::new(body);
    if r.u8().ok() != Some(TAG_PROOF) {
        return Err(HandshakeError::NoProof);
    }
    let mac = r.raw(MAC).map_err(HandshakeError::BadProof)?;
    r.end().map_err(HandshakeError::BadProof)?;
    secret.mac(SERVER, client_nonce, server_nonce).verify_slice(mac).map_err(|_| HandshakeError::ForgedProof)
}

/// A refusal frame carrying `reason`.
pub fn reject_frame(reason: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(TAG_REJECT).str(reason);
    w.finish()
}

/// Authenticates a freshly connected stream (blocking), connecting side.
///
/// # Errors
/// A socket error or a timeout ([`HandshakeError::Io`]), a refusal
/// ([`HandshakeError::Refused`]: for a wrong secret, the accepting side says so), or a peer that
/// is not an rthreads node or does not know the secret.
pub fn connect_side(stream: &mut TcpStream, secret: &Secret) -> Result<(), HandshakeError> {
    connect_side_waiting(stream, secret, AUTH_TIMEOUT)
}

/// As [`connect_side`], waiting up to `challenge` (instead of [`AUTH_TIMEOUT`]) for the accepting
/// side's challenge: a node that many nodes reach at once (node 0 while hundreds start) answers
/// them one after another, so the last ones wait for the challenge longer than for anything else.
///
/// # Errors
/// As [`connect_side`].
pub fn connect_side_waiting(
    stream: &mut TcpStream,
    secret: &Secret,
    challenge: Duration,
) -> Result<(), HandshakeError> {
    let old = stream.read_timeout().ok().flatten();
    stream
        .set_read_timeout(Some(challenge.max(Duration::from_millis(1))))
        .map_err(HandshakeError::io("setting a read timeout"))?;
    let body = read_frame(stream, 4096).map_err(HandshakeError::io("no authentication challenge"))?;
    stream.set_read_timeout(Some(AUTH_TIMEOUT)).map_err(HandshakeError::io("setting a read timeout"))?;
    let (response, sn, cn) = respond(secret, &body)?;
    write_frame(stream, &response).map_err(HandshakeError::io("sending the authentication response"))?;
    let body = read_frame(stream, 4096).map_err(HandshakeError::io("no authentication proof"))?;
    check_proof(secret, &sn, &cn, &body)?;
    stream.set_read_timeout(old).map_err(HandshakeError::io("restoring the read timeout"))?;
    Ok(())
}

/// Authenticates a freshly accepted stream (blocking), accepting side. On failure the peer has
/// been sent a refusal; the caller logs the error and drops the stream.
///
/// # Errors
/// A socket error or a timeout ([`HandshakeError::Io`]), garbage
/// ([`HandshakeError::NotAPeer`]), or a response this side refused
/// ([`HandshakeError::Rejected`]: malformed, or a wrong secret).
pub fn accept_side(stream: &mut TcpStream, secret: &Secret) -> Result<(), HandshakeError> {
    let old = stream.read_timeout().ok().flatten();
    stream.set_read_timeout(Some(AUTH_TIMEOUT)).map_err(HandshakeError::io("setting a read timeout"))?;
    let sn = nonce().map_err(HandshakeError::io("random nonce"))?;
    write_frame(stream, &challenge_frame(&sn)).map_err(HandshakeError::io("sending the challenge"))?;
    let body = read_frame(stream, 4096).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidData {
            HandshakeError::NotAPeer(e)
        } else {
            HandshakeError::Io { step: "no authentication response", source: e }
        }
    })?;
    match verify(secret, &sn, &body) {
        Ok(proof) => {
            write_frame(stream, &proof).map_err(HandshakeError::io("sending the proof"))?;
            stream.set_read_timeout(old).map_err(HandshakeError::io("restoring the read timeout"))?;
            Ok(())
        }
        Err(e) => {
            let _ = write_frame(stream, &reject_frame(&e.to_string()));
            // Let the refusal reach the peer before the caller closes the socket.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 256];
            stream.set_read_timeout(Some(Duration::from_millis(50))).ok();
            let _ = stream.read(&mut sink);
            Err(HandshakeError::Rejected(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(client: &Secret, server: &Secret) -> (Result<(), AuthError>, Result<(), HandshakeError>) {
        let sn = nonce().unwrap();
        let (resp, sn2, cn) = respond(client, &challenge_frame(&sn)).unwrap();
        assert_eq!(sn, sn2);
        match verify(server, &sn, &resp) {
            Ok(proof) => (Ok(()), check_proof(client, &sn, &cn, &proof)),
            Err(e) => {
                let refusal = reject_frame(&e.to_string());
                (Err(e), check_proof(client, &sn, &cn, &refusal))
            }
        }
    }

    /// The connecting side's error when the accepting side found its secret wrong.
    fn refused_for_a_wrong_secret(e: &HandshakeError) -> bool {
        matches!(e, HandshakeError::Refused(reason) if *reason == AuthError::WrongSecret.to_string())
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let s = Secret::generate().unwrap();
        let (a, b) = exchange(&s, &s.clone());
        assert_eq!(a, Ok(()));
        assert!(b.is_ok(), "{b:?}");
    }

    #[test]
    fn wrong_secret_is_refused_and_the_client_learns_why() {
        let (a, b) = exchange(&Secret::from_text("one").unwrap(), &Secret::from_text("two").unwrap());
        assert_eq!(a, Err(AuthError::WrongSecret));
        let b = b.unwrap_err();
        assert!(refused_for_a_wrong_secret(&b), "{b:?}");
        assert_eq!(b.to_string(), "refused: authentication failed: wrong cluster secret");
    }

    #[test]
    fn a_server_without_the_secret_cannot_forge_a_proof() {
        let s = Secret::generate().unwrap();
        let sn = nonce().unwrap();
        let (_, _, cn) = respond(&s, &challenge_frame(&sn)).unwrap();
        let mut forged = vec![TAG_PROOF];
        forged.extend_from_slice(&[0u8; MAC]);
        assert!(matches!(check_proof(&s, &sn, &cn, &forged), Err(HandshakeError::ForgedProof)));
        assert!(matches!(check_proof(&s, &sn, &cn, &forged[..9]), Err(HandshakeError::BadProof(_))));
        assert!(matches!(check_proof(&s, &sn, &cn, &[TAG_CHALLENGE]), Err(HandshakeError::NoProof)));
        // A proof made for other nonces (a replay) fails too.
        let other = nonce().unwrap();
        let (resp, _, _) = respond(&s, &challenge_frame(&other)).unwrap();
        let proof = verify(&s, &other, &resp).unwrap();
        assert!(matches!(check_proof(&s, &sn, &cn, &proof), Err(HandshakeError::ForgedProof)));
    }

    #[test]
    fn a_replayed_response_fails_against_a_new_challenge() {
        let s = Secret::generate().unwrap();
        let sn = nonce().unwrap();
        let (resp, _, _) = respond(&s, &challenge_frame(&sn)).unwrap();
        assert!(verify(&s, &sn, &resp).is_ok());
        assert_eq!(verify(&s, &nonce().unwrap(), &resp), Err(AuthError::WrongSecret));
    }

    #[test]
    fn garbage_never_panics() {
        let s = Secret::generate().unwrap();
        let sn = nonce().unwrap();
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(verify(&s, &sn, &body).is_err());
            let _ = respond(&s, &body);
            assert!(check_proof(&s, &sn, &sn, &body).is_err());
        }
    }

    #[test]
    fn hex_round_trip_and_text_keys() {
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert!(matches!(Secret::from_hex("abc"), Err(SecretError::NotHex)));
        assert!(matches!(Secret::from_hex(&"g".repeat(64)), Err(SecretError::NotHex)));
        assert_eq!(Secret::from_text(" pass \n").unwrap(), Secret::from_text("pass").unwrap());
        assert!(matches!(Secret::from_text("  "), Err(SecretError::Empty)));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rthreads-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::from_file(&f).unwrap_err();
        assert!(matches!(&e, SecretError::OpenToOthers { path, mode: 0o644 } if *path == f), "{e:?}");
        assert!(e.to_string().ends_with(&format!("others may read it; run `chmod 600 {}`", f.display())));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Secret::from_file(&f).unwrap(),
            Secret::from_text("correct horse battery staple").unwrap()
        );
        // A file holding 64 hex digits (what `rthreads secret --file` writes) gives the same key
        // as the same text in RTHREADS_SECRET.
        let s = Secret::generate().unwrap();
        std::fs::write(&f, format!("{}\n", s.to_hex())).unwrap();
        assert_eq!(Secret::from_file(&f).unwrap(), s);
        // A weak secret in a file is refused as in the environment.
        std::fs::write(&f, "hunter2\n").unwrap();
        let e = Secret::from_file(&f).unwrap_err();
        assert!(
            matches!(&e, SecretError::Weak { path, source } if *path == f
                && matches!(**source, SecretError::TooShort { len: 7 })),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "secret file {}: the cluster secret is too short (7 bytes",
                f.display()
            ))
        );
        assert!(text.contains("rthreads secret"), "{text}");
        // Neither a directory nor a missing file is a secret file.
        assert!(matches!(
            Secret::from_file(&dir),
            Err(SecretError::OpenToOthers { .. } | SecretError::NotAFile { .. })
        ));
        assert!(matches!(
            Secret::from_file(&dir.join("missing")),
            Err(SecretError::Unreadable { source, .. }) if source.kind() == io::ErrorKind::NotFound
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_people_give_must_have_16_bytes() {
        for weak in ["a", "", "   ", "\t\n", "fifteen bytes!!", "  short, spaced  "] {
            let e = Secret::from_setting(weak).unwrap_err();
            let len = weak.trim().len();
            match e {
                SecretError::Blank => assert_eq!(len, 0, "{weak:?}"),
                SecretError::TooShort { len: l } => assert_eq!(l, len, "{weak:?}"),
                _ => panic!("{weak:?}: {e:?}"),
            }
            // The message says how to make a good one.
            let e = e.to_string();
            assert!(e.contains("at least 16 bytes"), "{weak:?}: {e}");
            assert!(e.contains("export RTHREADS_SECRET=$(rthreads secret)"), "{weak:?}: {e}");
        }
        assert!(Secret::from_setting(" ").unwrap_err().to_string().contains("empty or blank"));
        assert!(Secret::from_setting("a").unwrap_err().to_string().contains("too short (1 byte;"));
        assert!(Secret::from_setting("ab").unwrap_err().to_string().contains("too short (2 bytes;"));
        // Sixteen bytes pass, hashed as text; surrounding whitespace does not count.
        assert_eq!(
            Secret::from_setting(" sixteen bytes!!! \n").unwrap(),
            Secret::from_text("sixteen bytes!!!").unwrap()
        );
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_setting(&s.to_hex()).unwrap(), s);
    }

    #[test]
    fn blocking_exchange_over_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let good = Secret::generate().unwrap();
        let g2 = good.clone();
        let server = std::thread::spawn(move || {
            let mut out = Vec::new();
            for _ in 0..3 {
                let (mut s, _) = l.accept().unwrap();
                out.push(accept_side(&mut s, &g2));
            }
            out
        });
        let mut c = TcpStream::connect(addr).unwrap();
        connect_side(&mut c, &good).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        let e = connect_side(&mut c, &Secret::from_text("wrong").unwrap()).unwrap_err();
        assert!(refused_for_a_wrong_secret(&e), "{e:?}");
        let mut c = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let results = server.join().unwrap();
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(HandshakeError::Rejected(AuthError::WrongSecret))),
            "{:?}",
            results[1]
        );
        assert!(matches!(results[2], Err(HandshakeError::NotAPeer(_))), "{:?}", results[2]);
        assert!(results[2].as_ref().unwrap_err().to_string().starts_with("not an rthreads peer ("));
    }
}
