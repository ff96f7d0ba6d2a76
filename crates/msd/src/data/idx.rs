//! IDX files (the MNIST format): an image file of N×H×W unsigned bytes (magic 0x00000803) and a
//! label file of N bytes (magic 0x00000801), each optionally gzip-compressed (detected from the
//! gzip magic, not the file name). So the full MNIST, Fashion-MNIST and KMNIST files load
//! unchanged. Errors name the file: wrong magic, truncated data, count mismatch.

use super::images::{ImageDataset, SplitConfig};
use super::source::{resolve, DataSource};
use super::TrainingData;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// `[data] kind = "idx"`: an IDX image file, its label file, and the split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxConfig {
    pub images: PathBuf,
    pub labels: PathBuf,
    #[serde(default = "SplitConfig::default_heldout")]
    pub heldout: usize,
    #[serde(default = "SplitConfig::default_split_seed")]
    pub split_seed: u64,
    #[serde(default = "SplitConfig::default_pad")]
    pub pad: i64,
}

impl IdxConfig {
    /// The split settings.
    pub fn split(&self) -> SplitConfig {
        SplitConfig {
            heldout: self.heldout,
            split_seed: self.split_seed,
            pad: self.pad,
        }
    }
}

impl DataSource for IdxConfig {
    fn open(&self, base: &Path) -> Result<Box<dyn TrainingData>> {
        Ok(Box::new(self.open_images(base)?))
    }
    fn open_images(&self, base: &Path) -> Result<ImageDataset> {
        let (ip, lp) = (resolve(base, &self.images), resolve(base, &self.labels));
        let (im, lb) = read_pair(&ip, &lp)?;
        let labels: Vec<i64> = lb.iter().map(|&l| l as i64).collect();
        ImageDataset::from_bytes(
            &im.pixels,
            [im.n, 1, im.rows, im.cols],
            &labels,
            None,
            &self.split(),
            &ip.display().to_string(),
        )
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.images, &mut self.labels]
    }
    fn to_spec(&self) -> String {
        format!(
            "idx:{},{}{}",
            self.images.display(),
            self.labels.display(),
            super::source::split_spec(&self.split())
        )
    }
}

/// Images read from an IDX3 file: `pixels` holds `n·rows·cols` bytes, row-major, image by image.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Largest IDX data section accepted (4 GiB: 5 million 28×28 images); a larger header is
/// refused before anything is read or decompressed.
pub const MAX_IDX_BYTES: u64 = 1 << 32;
/// Largest class id in a label file: a label above it is a corrupt file, not a class.
pub const MAX_IDX_LABEL: u8 = 199;

/// Opens a file as a byte stream, gunzipping it when it starts with the gzip magic; returns the
/// stream and, for a plain file, its size.
fn open_maybe_gz(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut magic = [0u8; 2];
    let got = read_full(&mut f, &mut magic).map_err(|e| Error::io(path, e))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(std::io::BufReader::new(f));
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(chained)), None))
    } else {
        Ok((Box::new(chained), Some(size)))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn gz_error(path: &Path, e: std::io::Error) -> Error {
    Error::format(path, format!("corrupt or truncated gzip data ({e})"))
}

/// Reads an IDX file of unsigned bytes with `ndim` dimensions: the header first, then exactly
/// the data it declares, never more than `MAX_IDX_BYTES` (so a small gzip bomb is refused after
/// its header, not after decompressing it). Returns the dimensions and the data.
fn read_idx(path: &Path, ndim: u8, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let (mut r, plain_size) = open_maybe_gz(path)?;
    let head_len = 4 + 4 * ndim as usize;
    let mut head = vec![0u8; head_len];
    let got = read_full(&mut r, &mut head).map_err(|e| gz_error(path, e))?;
    let dims = header(path, &head[..got], ndim, what)?;
    let len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&l| l <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "the header declares {dims:?}, above the limit of {MAX_IDX_BYTES} data bytes"
                ),
            )
        })? as usize;
    // A plain file cannot hold more than its size: check before allocating the data.
    if let Some(size) = plain_size {
        let have = size.saturating_sub(head_len as u64);
        if have < len as u64 {
            return Err(Error::format(
                path,
                format!("truncated: the header promises {dims:?} = {len} data bytes but only {have} follow"),
            ));
        }
    }
    let mut data = Vec::new();
    data.try_reserve_exact(len).map_err(|_| {
        Error::format(
            path,
            format!("the header declares {dims:?} = {len} bytes, which do not fit in memory"),
        )
    })?;
    let have = (&mut r)
        .take(len as u64)
        .read_to_end(&mut data)
        .map_err(|e| gz_error(path, e))?;
    if have < len {
        return Err(Error::format(
            path,
            format!(
                "truncated: the header promises {dims:?} = {len} data bytes but only {have} follow"
            ),
        ));
    }
    let mut extra = [0u8; 4096];
    let mut trailing = 0usize;
    loop {
        let k = read_full(&mut r, &mut extra).map_err(|e| gz_error(path, e))?;
        trailing += k;
        if k < extra.len() || trailing >= 1 << 20 {
            break;
        }
    }
    if trailing > 0 {
        let amount = if trailing >= 1 << 20 {
            "1 MiB or more".to_string()
        } else {
            format!("{trailing} bytes")
        };
        return Err(Error::format(
            path,
            format!("{amount} of trailing data after the {dims:?} declared in the header"),
        ));
    }
    Ok((dims, data))
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

/// Reads an IDX3 image file (N×H×W bytes), gzipped or not.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path, 3, "image (N×H×W)")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(Error::format(
            path,
            format!("empty image set: dimensions {dims:?}"),
        ));
    }
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX1 label file (N bytes), gzipped or not. Labels must be class ids `0..C` with
/// every class present: a stray large label (a corrupt byte) would otherwise create classes
/// without a single image.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let (_, labels) = read_idx(path, 1, "label")?;
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l > MAX_IDX_LABEL) {
        return Err(Error::format(
            path,
            format!("label {l} at position {i} is above the largest class id accepted ({MAX_IDX_LABEL})"),
        ));
    }
    let mut count = [0usize; 256];
    for &l in &labels {
        count[l as usize] += 1;
    }
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    if let Some(missing) = (0..=max).find(|&c| count[c] == 0) {
        let i = labels.iter().position(|&l| l as usize == max).unwrap_or(0);
        return Err(Error::format(
            path,
            format!(
                "label {max} (at position {i}) implies {} classes, but class {missing} has no example; \
                 labels must be 0..C with every class present",
                max + 1
            ),
        ));
    }
    Ok(labels)
}

/// Reads an image file and its label file and checks that the counts agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(IdxImages, Vec<u8>)> {
    let lb = read_labels(labels)?;
    let im = read_images(images)?;
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
        let lab = encode_labels(&[2, 0, 1]);
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
            assert_eq!(lb, vec![2, 0, 1]);
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_decompressing_it() {
        let d = tempfile::tempdir().unwrap();
        // 64 MiB of zeros behind a header that declares 2 images of 2×2: a few KB gzipped.
        let mut bomb = encode_images(2, 2, 2, &[0; 8]);
        bomb.resize(bomb.len() + (64 << 20), 0);
        let p = write(d.path(), "bomb.gz", &gz(&bomb));
        let e = read_images(&p).unwrap_err().to_string();
        assert!(
            e.contains("bomb.gz") && e.contains("1 MiB or more of trailing"),
            "{e}"
        );
        // A header that declares more than the limit is refused from the header alone.
        let mut huge = vec![0u8, 0, 8, 3];
        for dim in [u32::MAX, 1 << 16, 1 << 16] {
            huge.extend(dim.to_be_bytes());
        }
        let p = write(d.path(), "huge.gz", &gz(&huge));
        let e = read_images(&p).unwrap_err().to_string();
        assert!(
            e.contains("huge.gz") && e.contains("above the limit"),
            "{e}"
        );
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
        let l2 = write(d.path(), "two.idx", &encode_labels(&[0, 1]));
        let e = read_pair(&i, &l2).unwrap_err().to_string();
        assert!(
            e.contains("two.idx")
                && e.contains("count mismatch")
                && e.contains("2 labels")
                && e.contains("3 images"),
            "{e}"
        );
        // A stray label: 200 among 0..2 would make 201 classes.
        let l3 = write(d.path(), "stray.idx", &encode_labels(&[0, 1, 200]));
        let e = read_labels(&l3).unwrap_err().to_string();
        assert!(e.contains("stray.idx") && e.contains("label 200"), "{e}");
        let l4 = write(d.path(), "gap.idx", &encode_labels(&[0, 1, 3]));
        let e = read_labels(&l4).unwrap_err().to_string();
        assert!(
            e.contains("gap.idx") && e.contains("class 2 has no example"),
            "{e}"
        );
        // Trailing data, plain and gzipped.
        let mut long = img.clone();
        long.extend([1, 2, 3]);
        let t = write(d.path(), "long.idx", &long);
        let e = read_images(&t).unwrap_err().to_string();
        assert!(
            e.contains("long.idx") && e.contains("3 bytes of trailing"),
            "{e}"
        );
        let t = write(d.path(), "long.gz", &gz(&long));
        let e = read_images(&t).unwrap_err().to_string();
        assert!(
            e.contains("long.gz") && e.contains("3 bytes of trailing"),
            "{e}"
        );
        // Missing file.
        let e = read_labels(&d.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
