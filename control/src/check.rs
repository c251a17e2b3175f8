//! What a daemon's `--check` found (`lbd --check`, `bgpd --check`): the problems that would stop
//! a start, notes that would not, and how both are printed (one line each, once).

/// What a `--check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems: each would stop a start (or leave a listener deaf). One line each.
    pub problems: Vec<String>,
    /// Things worth knowing that do not stop a start (a daemon already running, plugin files
    /// skipped).
    pub notes: Vec<String>,
    /// The `ok` line, when there is no problem.
    pub summary: String,
}

impl Report {
    /// Prints the notes and the problems (stderr, `DAEMON: ` first) or the `ok` line
    /// (stdout); returns the exit status: 0, or 2 when there is a problem.
    pub fn print(&self, daemon: &str) -> i32 {
        for n in &self.notes {
            eprintln!("{daemon}: note: {n}");
        }
        for p in &self.problems {
            eprintln!("{daemon}: {p}");
        }
        if self.problems.is_empty() {
            println!("{}", self.summary);
            0
        } else {
            2
        }
    }
}
