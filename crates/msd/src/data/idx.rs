//! IDX files (the MNIST format): an image file of N×H×W unsigned bytes (magic 0x00000803) and a
//! label file of N bytes (magic 0x00000801), each optionally gzip-compressed (detected from the
//! gzip magic, not the file name). So the full MNIST, Fashion-MNIST and KMNIST files load
//! unchanged. Errors name the file: wrong magic, truncated data, count mismatch.

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Images read from an IDX3 file: `pixels` holds `n·rows·cols` bytes, row-major, image by image.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("corrupt or truncated gzip data ({e})")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the 4-byte magic (`00 00 08 ndim`) and returns the dimensions that follow it.
fn header(path: &Path, bytes: &[u8], ndim: u8, what: &str) -> Result<Vec<usize>> {
    let want = [0u8, 0, 0x08, ndim];
    if bytes.len() < 4 {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header",
                bytes.len()
            ),
        ));
    }
    if bytes[..4] != want {
        let got = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let want = u32::from_be_bytes(want);
        return Err(Error::format(
            path,
            format!("wrong magic number 0x{got:08x}; an IDX {what} file of unsigned bytes starts with 0x{want:08x}"),
        ));
    }
    let head = 4 + 4 * ndim as usize;
    if bytes.len() < head {
        return Err(Error::format(
            path,
            format!(
                "truncated: the IDX header needs {head} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    Ok((0..ndim as usize)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect())
}

fn body<'a>(
    path: &Path,
    bytes: &'a [u8],
    head: usize,
    len: usize,
    dims: &[usize],
) -> Result<&'a [u8]> {
    let have = bytes.len() - head;
    if have < len {
        return Err(Error::format(
            path,
            format!(
                "truncated: the header promises {dims:?} = {len} data bytes but only {have} follow"
            ),
        ));
    }
    if have > len {
        return Err(Error::format(
            path,
            format!(
                "{} bytes of trailing data after the {dims:?} declared in the header",
                have - len
            ),
        ));
    }
    Ok(&bytes[head..head + len])
}

/// Reads an IDX3 image file (N×H×W bytes), gzipped or not.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gz(path)?;
    let dims = header(path, &bytes, 3, "image (N×H×W)")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(Error::format(
            path,
            format!("empty image set: dimensions {dims:?}"),
        ));
    }
    let len = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
    let pixels = body(path, &bytes, 16, len, &dims)?.to_vec();
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX1 label file (N bytes), gzipped or not.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    let dims = header(path, &bytes, 1, "label")?;
    Ok(body(path, &bytes, 8, dims[0], &dims)?.to_vec())
}

/// Reads an image file and its label file and checks that the counts agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(IdxImages, Vec<u8>)> {
    let im = read_images(images)?;
    let lb = read_labels(labels)?;
    if im.n != lb.len() {
        return Err(Error::format(
            labels,
            format!(
                "count mismatch: {} labels but {} has {} images",
                lb.len(),
                images.display(),
                im.n
            ),
        ));
    }
    Ok((im, lb))
}

/// Encodes images as an IDX3 file body (used by tests and tools that write IDX).
pub fn encode_images(n: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend((d as u32).to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// Encodes labels as an IDX1 file body.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8, 0, 8, 1];
    v.extend((labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_plain_and_gzipped_files() {
        let d = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..3 * 2 * 4).map(|i| i as u8).collect();
        let img = encode_images(3, 2, 4, &px);
        let lab = encode_labels(&[7, 0, 9]);
        for (i, l) in [
            (write(d.path(), "i", &img), write(d.path(), "l", &lab)),
            (
                write(d.path(), "i.gz", &gz(&img)),
                write(d.path(), "l.gz", &gz(&lab)),
            ),
        ] {
            let (im, lb) = read_pair(&i, &l).unwrap();
            assert_eq!((im.n, im.rows, im.cols), (3, 2, 4));
            assert_eq!(im.pixels, px);
            assert_eq!(lb, vec![7, 0, 9]);
        }
    }

    #[test]
    fn bad_files_give_errors_that_name_the_file_and_the_fault() {
        let d = tempfile::tempdir().unwrap();
        let img = encode_images(3, 2, 2, &[0; 12]);
        let lab = encode_labels(&[1, 2, 3]);
        // Wrong magic: a label file given as images.
        let l = write(d.path(), "labels.idx", &lab);
        let e = read_images(&l).unwrap_err().to_string();
        assert!(
            e.contains("labels.idx") && e.contains("wrong magic") && e.contains("0x00000801"),
            "{e}"
        );
        // Truncated pixel data, plain and gzipped.
        let t = write(d.path(), "short.idx", &img[..img.len() - 1]);
        let e = read_images(&t).unwrap_err().to_string();
        assert!(e.contains("short.idx") && e.contains("truncated"), "{e}");
        let tg = gz(&img);
        let t = write(d.path(), "short.gz", &tg[..tg.len() / 2]);
        let e = read_images(&t).unwrap_err().to_string();
        assert!(e.contains("short.gz") && e.contains("truncated"), "{e}");
        // Truncated header.
        let t = write(d.path(), "head.idx", &img[..6]);
        assert!(read_images(&t)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        // Count mismatch.
        let i = write(d.path(), "img.idx", &img);
        let l2 = write(d.path(), "two.idx", &encode_labels(&[1, 2]));
        let e = read_pair(&i, &l2).unwrap_err().to_string();
        assert!(
            e.contains("two.idx")
                && e.contains("count mismatch")
                && e.contains("2 labels")
                && e.contains("3 images"),
            "{e}"
        );
        // Missing file.
        let e = read_labels(&d.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
