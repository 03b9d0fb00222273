//! The visits file: its format, how it is read at start-up and how a new count replaces
//! the old one.
//!
//! The file holds one decimal number and a newline, so `kubectl exec pod -- cat /data/visits`
//! prints the count. A new count is never written over the old one in place: it goes to a
//! temporary file in the same directory, which is fsync'ed and then renamed over the visits
//! file, and the directory is fsync'ed so the rename itself survives a power cut. A reader,
//! or a crash at any instant, therefore sees either the old count or the new one, never a
//! torn or empty file.
//!
//! The steps are separate functions ([`VisitsFile::stage`], [`VisitsFile::install`],
//! [`VisitsFile::sync_dir`]) because the group-commit writer overlaps the slow ones (the two
//! fsyncs) of successive commits while keeping the renames in order.
//!
//! Every error names the path it concerns.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{CommitError, OpenError};

/// The visits file and the directory that holds it.
#[derive(Debug, Clone)]
pub struct VisitsFile {
    path: PathBuf,
    dir: PathBuf,
    file_name: OsString,
}

impl VisitsFile {
    /// Describes the visits file at `path`. Nothing is read or created.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let path = path.into();
        let file_name = path
            .file_name()
            .ok_or_else(|| OpenError::NotAFileName { path: path.clone() })?
            .to_owned();
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok(Self {
            path,
            dir,
            file_name,
        })
    }

    /// The visits file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory that holds the visits file (and the temporary files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that the directory exists: the app does not create it. On a cluster it is the
    /// mount point of the pod's volume; if it is missing, the volume is not mounted where the
    /// app looks, and counting into the container's own file system would lose every visit at
    /// the next restart.
    pub fn check_dir(&self) -> Result<(), OpenError> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(OpenError::DirNotADirectory {
                dir: self.dir.clone(),
            }),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Err(OpenError::MissingDir {
                dir: self.dir.clone(),
            }),
            Err(cause) => Err(OpenError::ReadDir {
                dir: self.dir.clone(),
                cause,
            }),
        }
    }

    /// Reads the stored count: 0 if the file does not exist. A file that exists but cannot be
    /// read or does not hold a count is an error, and is left exactly as it is.
    pub fn load(&self) -> Result<u64, OpenError> {
        let mut bytes = Vec::new();
        match File::open(&self.path).and_then(|mut file| file.read_to_end(&mut bytes)) {
            Ok(_) => parse(&bytes).map_err(|problem| OpenError::Corrupt {
                path: self.path.clone(),
                problem,
            }),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(cause) => Err(OpenError::Read {
                path: self.path.clone(),
                cause,
            }),
        }
    }

    /// The temporary file used by commit slot `slot`: hidden, in the same directory (a rename
    /// is only atomic within one file system), one per slot so overlapping commits never share
    /// one. A crash may leave one behind; the next commit in that slot overwrites it.
    pub fn temp_path(&self, slot: usize) -> PathBuf {
        let mut name = OsString::from(".");
        name.push(&self.file_name);
        name.push(format!(".tmp{slot}"));
        self.dir.join(name)
    }

    /// Step 1: writes `value` to slot `slot`'s temporary file and fsyncs it. On failure the
    /// temporary file is removed (best effort) and the visits file is untouched.
    pub fn stage(&self, slot: usize, value: u64) -> Result<PathBuf, CommitError> {
        let temp = self.temp_path(slot);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(encode(value).as_bytes())?;
                Ok(file)
            });
        let result = match written {
            Err(cause) => Err(CommitError::Write {
                path: temp.clone(),
                cause,
            }),
            Ok(file) => file.sync_all().map_err(|cause| CommitError::Sync {
                path: temp.clone(),
                cause,
            }),
        };
        match result {
            Ok(()) => Ok(temp),
            Err(error) => {
                let _ = fs::remove_file(&temp);
                Err(error)
            }
        }
    }

    /// Step 2: renames a staged temporary file over the visits file. From here on readers see
    /// the new count.
    pub fn install(&self, temp: &Path) -> Result<(), CommitError> {
        fs::rename(temp, &self.path).map_err(|cause| {
            let _ = fs::remove_file(temp);
            CommitError::Rename {
                from: temp.to_owned(),
                to: self.path.clone(),
                cause,
            }
        })
    }

    /// Step 3: fsyncs the directory, which makes the rename durable.
    pub fn sync_dir(&self) -> Result<(), CommitError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|cause| CommitError::SyncDir {
                path: self.dir.clone(),
                cause,
            })
    }

    /// All three steps, one after the other.
    pub fn store(&self, slot: usize, value: u64) -> Result<(), CommitError> {
        let temp = self.stage(slot, value)?;
        self.install(&temp)?;
        self.sync_dir()
    }

    /// The baseline the course labs used, kept only to benchmark against: read the file,
    /// add one, write the result over the file in place, fsync. One request at a time. Not
    /// crash-safe (a crash between the truncate and the write leaves an empty file), and
    /// every visit costs a full fsync of its own.
    pub fn increment_in_place(&self, by: u64) -> Result<u64, CommitError> {
        let io_error = |cause| CommitError::Write {
            path: self.path.clone(),
            cause,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io_error)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error)?;
        let current = if bytes.is_empty() {
            0
        } else {
            parse(&bytes).map_err(|problem| CommitError::Corrupt {
                path: self.path.clone(),
                problem,
            })?
        };
        let value = current + by;
        file.set_len(0).map_err(io_error)?;
        io::Seek::rewind(&mut file).map_err(io_error)?;
        file.write_all(encode(value).as_bytes()).map_err(io_error)?;
        file.sync_all().map_err(|cause| CommitError::Sync {
            path: self.path.clone(),
            cause,
        })?;
        Ok(value)
    }
}

/// The file's contents for a count: decimal digits and a newline.
pub fn encode(value: u64) -> String {
    format!("{value}\n")
}

/// Reads a count: decimal digits, optionally surrounded by ASCII whitespace (so a file
/// written with `echo 41 > visits` is accepted). Anything else is corruption.
pub fn parse(bytes: &[u8]) -> Result<u64, Corruption> {
    let digits = bytes.trim_ascii();
    if digits.is_empty() {
        return Err(if bytes.is_empty() {
            Corruption::Empty
        } else {
            Corruption::Blank
        });
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(Corruption::NotANumber {
            found: snippet(bytes),
        });
    }
    // All ASCII digits, so valid UTF-8; the only possible failure left is overflow.
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Corruption::TooLarge)
}

/// The start of the file's contents, printable, for an error message.
fn snippet(bytes: &[u8]) -> String {
    const SHOWN: usize = 40;
    let shown = &bytes[..bytes.len().min(SHOWN)];
    let mut text = shown.escape_ascii().to_string();
    if bytes.len() > SHOWN {
        text.push_str("...");
    }
    text
}

/// What is wrong with a visits file that exists but does not hold a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// Zero bytes long.
    Empty,
    /// Only whitespace.
    Blank,
    /// Something other than one decimal number.
    NotANumber {
        /// The start of the contents, escaped.
        found: String,
    },
    /// Digits, but more than a `u64` holds.
    TooLarge,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the file is empty"),
            Self::Blank => f.write_str("the file holds only whitespace"),
            Self::NotANumber { found } => {
                write!(f, "expected one decimal number, found \"{found}\"")
            }
            Self::TooLarge => write!(f, "the number is larger than {}", u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_encode_writes_and_what_people_type() {
        for value in [0, 1, 41, u64::MAX] {
            assert_eq!(parse(encode(value).as_bytes()), Ok(value));
        }
        assert_eq!(parse(b"41"), Ok(41));
        assert_eq!(parse(b" 41 \r\n"), Ok(41));
        assert_eq!(parse(b"007\n"), Ok(7));
    }

    #[test]
    fn rejects_anything_else_and_says_what_it_found() {
        assert_eq!(parse(b""), Err(Corruption::Empty));
        assert_eq!(parse(b" \n"), Err(Corruption::Blank));
        assert_eq!(parse(b"18446744073709551616"), Err(Corruption::TooLarge));
        for bad in [
            &b"+5"[..],
            b"-1",
            b"4 1",
            b"0x10",
            b"12abc",
            b"\xff\xfe",
            b"1.5",
        ] {
            match parse(bad) {
                Err(Corruption::NotANumber { found }) => {
                    assert_eq!(found, bad.escape_ascii().to_string());
                }
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
        let long = vec![b'x'; 100];
        let message = parse(&long).unwrap_err().to_string();
        assert!(message.ends_with("...\""), "{message}");
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn dir_of_a_bare_file_name_is_the_working_directory() {
        let file = VisitsFile::new("visits").unwrap();
        assert_eq!(file.dir(), Path::new("."));
        assert_eq!(file.temp_path(3), Path::new("./.visits.tmp3"));
        let file = VisitsFile::new("/data/visits").unwrap();
        assert_eq!(file.dir(), Path::new("/data"));
        assert!(matches!(
            VisitsFile::new("/"),
            Err(OpenError::NotAFileName { .. })
        ));
    }

    #[test]
    fn load_store_round_trip_and_missing_file_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = VisitsFile::new(dir.path().join("visits")).unwrap();
        file.check_dir().unwrap();
        assert_eq!(file.load().unwrap(), 0);
        file.store(0, 41).unwrap();
        assert_eq!(fs::read_to_string(file.path()).unwrap(), "41\n");
        assert_eq!(file.load().unwrap(), 41);
        assert!(
            !file.temp_path(0).exists(),
            "the temporary file was renamed away"
        );
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = VisitsFile::new(dir.path().join("visits")).unwrap();
        fs::write(file.path(), "forty-one\n").unwrap();
        let error = file.load().unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("forty-one"), "{message}");
        assert_eq!(fs::read_to_string(file.path()).unwrap(), "forty-one\n");
    }

    #[test]
    fn unreadable_file_is_a_read_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read, even by root.
        let path = dir.path().join("visits");
        fs::create_dir(&path).unwrap();
        let error = VisitsFile::new(&path).unwrap().load().unwrap_err();
        assert!(matches!(error, OpenError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn missing_directory_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = VisitsFile::new(dir.path().join("not-mounted/visits")).unwrap();
        let error = file.check_dir().unwrap_err();
        assert!(matches!(error, OpenError::MissingDir { .. }), "{error:?}");
        assert!(!dir.path().join("not-mounted").exists());

        fs::write(dir.path().join("plain"), "").unwrap();
        let file = VisitsFile::new(dir.path().join("plain/visits")).unwrap();
        assert!(matches!(
            file.check_dir(),
            Err(OpenError::DirNotADirectory { .. })
        ));
    }

    #[test]
    fn failed_stage_leaves_the_visits_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let file = VisitsFile::new(dir.path().join("visits")).unwrap();
        file.store(0, 5).unwrap();
        // A directory squatting on the temporary file's name makes creating it fail.
        fs::create_dir(file.temp_path(1)).unwrap();
        let error = file.stage(1, 6).unwrap_err();
        assert!(matches!(error, CommitError::Write { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains(&file.temp_path(1).display().to_string())
        );
        assert_eq!(file.load().unwrap(), 5);
    }

    #[test]
    fn in_place_baseline_counts_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = VisitsFile::new(dir.path().join("visits")).unwrap();
        assert_eq!(file.increment_in_place(1).unwrap(), 1);
        assert_eq!(file.increment_in_place(1).unwrap(), 2);
        assert_eq!(fs::read_to_string(file.path()).unwrap(), "2\n");
        fs::write(file.path(), "junk").unwrap();
        assert!(matches!(
            file.increment_in_place(1),
            Err(CommitError::Corrupt { .. })
        ));
        assert_eq!(fs::read_to_string(file.path()).unwrap(), "junk");
    }
}
