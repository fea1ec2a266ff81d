//! Codecs for cold objects: lz4 (fast, about 2:1 on model-like data) and zlib (slower, a
//! better ratio), or none. Only objects no one references are compressed: a referenced one
//! is mapped by its readers and must stay in its memfd.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Lz4,
    Zlib,
    None,
}

/// zlib's level: the middle one; compression runs in the background, on cold objects.
const ZLIB_LEVEL: u8 = 6;

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zlib => "zlib",
            Compression::None => "none",
        }
    }

    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "lz4" => Some(Compression::Lz4),
            "zlib" => Some(Compression::Zlib),
            "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// `bytes` compressed; `None` for `none`.
    pub fn compress(self, bytes: &[u8]) -> Option<Vec<u8>> {
        match self {
            Compression::Lz4 => Some(lz4_flex::compress(bytes)),
            Compression::Zlib => Some(miniz_oxide::deflate::compress_to_vec_zlib(
                bytes, ZLIB_LEVEL,
            )),
            Compression::None => None,
        }
    }

    /// The `size` bytes that `packed` holds.
    pub fn decompress(self, packed: &[u8], size: usize) -> Result<Vec<u8>, String> {
        let bytes = match self {
            Compression::Lz4 => {
                lz4_flex::decompress(packed, size).map_err(|e| format!("lz4: {e}"))?
            }
            Compression::Zlib => {
                miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(packed, size)
                    .map_err(|e| format!("zlib: {e:?}"))?
            }
            Compression::None => packed.to_vec(),
        };
        if bytes.len() != size {
            return Err(format!("{} bytes back of {size}", bytes.len()));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn each_codec_gives_the_bytes_back() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 / 3).collect();
        for codec in [Compression::Lz4, Compression::Zlib] {
            let packed = codec.compress(&bytes).unwrap();
            assert!(packed.len() < bytes.len() / 2, "{}", codec.name());
            assert_eq!(codec.decompress(&packed, bytes.len()).unwrap(), bytes);
            assert!(
                codec
                    .decompress(&packed[..packed.len() / 2], bytes.len())
                    .is_err()
            );
        }
        assert_eq!(Compression::None.compress(&bytes), None);
        assert_eq!(Compression::parse("zlib"), Some(Compression::Zlib));
        assert_eq!(Compression::parse("zstd"), None);
    }
}
