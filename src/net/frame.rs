//! Length-prefixed message frames on byte streams (QUIC streams in
//! practice): a `u32` big-endian length, then that many bytes of postcard.
//!
//! The functions are generic over tokio's `AsyncRead`/`AsyncWrite`, which
//! `quinn::RecvStream`/`quinn::SendStream` implement. A frame larger than
//! [`MAX_FRAME`] is refused on both ends; the reader refuses it before
//! allocating anything, so a hostile length prefix cannot exhaust memory.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body accepted or sent, in bytes (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// Errors reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed (reset, connection lost, …).
    #[error("frame i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The frame length exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME}")]
    TooLarge(usize),
    /// The frame body is not a valid encoding of the expected message (or a
    /// message could not be encoded).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame (truncated).
    #[error("stream closed in the middle of a frame")]
    Closed,
}

/// Writes one frame: `u32` big-endian length, then the postcard bytes of
/// `msg`. Fails with [`FrameError::TooLarge`] (writing nothing) when the
/// encoding exceeds [`MAX_FRAME`].
pub async fn write_frame<W, T>(s: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let mut body = postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = body.len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    // Header and body in one buffer so they go out in one write.
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    out.append(&mut body);
    s.write_all(&out).await?;
    s.flush().await?;
    Ok(())
}

/// Reads one frame. Returns `Ok(None)` at a clean end of stream before a
/// length prefix, [`FrameError::TooLarge`] (without allocating) when the
/// prefix exceeds [`MAX_FRAME`], [`FrameError::Closed`] when the stream ends
/// inside a frame, and [`FrameError::Malformed`] when the body does not
/// decode as `T` or has trailing bytes.
pub async fn read_frame<R, T>(s: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let Some(body) = read_frame_bytes(s).await? else {
        return Ok(None);
    };
    decode(&body).map(Some)
}

/// Decodes a frame body read with [`read_frame_bytes`] (a message may
/// borrow from it, e.g. chunk bytes, without a copy).
pub fn decode<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Reads one frame's body, undecoded; the same errors as [`read_frame`]
/// except `Malformed`.
pub async fn read_frame_bytes<R>(s: &mut R) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = s.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Closed)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len);
    (&mut *s).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(FrameError::Closed);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use tokio::io::duplex;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Hello { version: u32, name: String },
        Data(Vec<u8>),
        Bye,
    }

    #[tokio::test]
    async fn round_trip_then_clean_eof() {
        let (mut a, mut b) = duplex(1 << 16);
        let msgs = vec![
            Msg::Hello {
                version: 1,
                name: "n".into(),
            },
            Msg::Data(vec![7; 40_000]),
            Msg::Bye,
        ];
        let sent = msgs.clone();
        let writer = tokio::spawn(async move {
            for m in &sent {
                write_frame(&mut a, m).await.expect("write");
            }
            // `a` dropped here: clean end of stream.
        });
        for m in &msgs {
            let got: Msg = read_frame(&mut b).await.expect("read").expect("frame");
            assert_eq!(&got, m);
        }
        writer.await.expect("writer");
        let end: Option<Msg> = read_frame(&mut b).await.expect("eof");
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn oversize_prefix_is_too_large() {
        let (mut a, mut b) = duplex(64);
        let len = (MAX_FRAME as u32) + 1;
        a.write_all(&len.to_be_bytes()).await.expect("write");
        let r: Result<Option<Msg>, _> = read_frame(&mut b).await;
        assert!(
            matches!(r, Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1),
            "{r:?}"
        );
        // The largest prefix too.
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let r: Result<Option<Msg>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))), "{r:?}");
    }

    #[tokio::test]
    async fn oversize_message_is_not_written() {
        let (mut a, _b) = duplex(64);
        let big = Msg::Data(vec![0; MAX_FRAME]);
        let r = write_frame(&mut a, &big).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))), "{r:?}");
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let (mut a, mut b) = duplex(64);
        // Variant index 200 does not exist.
        let body = [200u8, 1, 2, 3];
        a.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .expect("write");
        a.write_all(&body).await.expect("write");
        let r: Result<Option<Msg>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");

        // A valid message followed by trailing bytes inside the frame.
        let mut body = postcard::to_stdvec(&Msg::Bye).expect("enc");
        body.push(0);
        a.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .expect("write");
        a.write_all(&body).await.expect("write");
        let r: Result<Option<Msg>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        // Truncated body.
        let (mut a, mut b) = duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.expect("write");
        a.write_all(&[1, 2, 3]).await.expect("write");
        drop(a);
        let r: Result<Option<Msg>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::Closed)), "{r:?}");

        // Truncated length prefix.
        let (mut a, mut b) = duplex(64);
        a.write_all(&[0, 0]).await.expect("write");
        drop(a);
        let r: Result<Option<Msg>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::Closed)), "{r:?}");
    }
}
