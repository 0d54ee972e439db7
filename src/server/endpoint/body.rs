//! Reading a webhook body that is not yet trusted: hashed (HMAC-SHA256) as it arrives, kept in
//! memory only up to [`super::IN_MEMORY`] bytes and the rest spooled to an anonymous temp file
//! (gone when closed), so that a flood of large unsigned bodies costs disk, not memory.

use std::io;

use axum::body::Body;
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The 32 bytes of an `X-Hub-Signature-256: sha256=<hex>` header, if it is one.
pub(super) fn signature(header: Option<&str>) -> Option<Vec<u8>> {
    let hex_sig = header?.strip_prefix("sha256=")?.trim();
    let bytes = hex::decode(hex_sig).ok()?;
    (bytes.len() == 32).then_some(bytes)
}

/// Why a body could not be read.
pub(super) enum ReadError {
    /// More than the limit arrived (a chunked body, or a `Content-Length` that lied).
    TooLarge,
    /// The connection broke, or the spool file could not be written.
    Broken(String),
}

/// A body read to its end, with its HMAC.
pub(super) struct Spool {
    mac: HmacSha256,
    memory: Vec<u8>,
    file: Option<tokio::fs::File>,
}

/// Read `body` (at most `max` bytes), hashing it with `secret`.
pub(super) async fn read(body: Body, secret: &[u8], max: usize) -> Result<Spool, ReadError> {
    let mac = HmacSha256::new_from_slice(secret).map_err(|e| ReadError::Broken(e.to_string()))?;
    // Room for what the `Content-Length` announces (bounded), so that the body is not
    // copied again and again as it grows.
    let announced = axum::body::HttpBody::size_hint(&body).lower() as usize;
    let mut spool = Spool {
        mac,
        memory: Vec::with_capacity(announced.min(max).min(super::IN_MEMORY)),
        file: None,
    };
    let mut len = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ReadError::Broken(format!("cannot read the body: {e}")))?;
        len = len.saturating_add(chunk.len());
        if len > max {
            return Err(ReadError::TooLarge);
        }
        spool.mac.update(&chunk);
        spool
            .write(&chunk)
            .await
            .map_err(|e| ReadError::Broken(format!("cannot spool the body: {e}")))?;
    }
    Ok(spool)
}

impl Spool {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.memory.len() + chunk.len() > super::IN_MEMORY {
            let file = tokio::task::spawn_blocking(tempfile::tempfile)
                .await
                .map_err(io::Error::other)??;
            let mut file = tokio::fs::File::from_std(file);
            file.write_all(&self.memory).await?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(f) => f.write_all(chunk).await,
            None => {
                self.memory.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// Whether the body's HMAC is `signature` (compared in constant time).
    pub(super) fn signed_with(&self, signature: &[u8]) -> bool {
        self.mac.clone().verify_slice(signature).is_ok()
    }

    /// The whole body (read back from the spool file if it went there).
    pub(super) async fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self.file {
            None => Ok(self.memory),
            Some(mut f) => {
                f.flush().await?;
                f.rewind().await?;
                let mut out = Vec::new();
                f.read_to_end(&mut out).await?;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_headers() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            signature(Some(&format!("sha256={hex64}"))).map(|s| s.len()),
            Some(32)
        );
        assert_eq!(signature(None), None);
        assert_eq!(signature(Some("sha1=abcd")), None);
        assert_eq!(signature(Some("sha256=zz")), None);
        assert_eq!(signature(Some("sha256=abcd")), None);
    }

    #[tokio::test]
    async fn a_large_body_is_spooled_and_read_back_whole() {
        let data: Vec<u8> = (0..super::super::IN_MEMORY * 3)
            .map(|i| (i % 251) as u8)
            .collect();
        let chunks: Vec<Result<Vec<u8>, io::Error>> =
            data.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let spool = read(body, b"k", data.len()).await.ok().expect("read");
        assert!(spool.file.is_some(), "spooled");
        let sig = crate::server::webhook::sign(b"k", &data);
        let raw = signature(Some(&sig)).expect("sig");
        assert!(spool.signed_with(&raw));
        assert_eq!(spool.into_bytes().await.expect("back"), data);
    }
}
