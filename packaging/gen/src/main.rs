//! `spanlb-gendocs DIR`: writes the man pages and shell completions of `lbd`, `lbctl`, `bgpd`
//! and `bgpctl` under DIR, from the clap definitions the binaries parse with (`lbd::cli`,
//! `bgpd::cli`), so they cannot drift from the real options.
//!
//! Layout (packaging/build-deb.sh moves each file to where Debian wants it):
//!
//! - `man/NAME.SECTION`, and `man/NAME-SUBCOMMAND.SECTION` for each subcommand: section 8 for
//!   the daemons (in /usr/sbin), 1 for the CLIs (/usr/bin);
//! - `completions/bash/NAME.bash`, `completions/zsh/_NAME`, `completions/fish/NAME.fish`.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Each binary: its name, its man section and its clap command.
fn commands() -> Vec<(&'static str, &'static str, clap::Command)> {
    vec![
        ("lbd", "8", lbd::cli::Lbd::command()),
        ("lbctl", "1", lbd::cli::lbctl::Args::command()),
        ("bgpd", "8", bgpd::cli::Bgpd::command()),
        ("bgpctl", "1", bgpd::cli::bgpctl::Args::command()),
    ]
}

/// Writes `cmd`'s page and one per (visible) subcommand, recursively: `lbctl.1`,
/// `lbctl-show.1`, `lbctl-show-pools.1`, ... (the names git and cargo use).
fn man_pages(cmd: &clap::Command, section: &str, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, section, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("spanlb")
        .source(format!("spanlb {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(dir.join(man.get_filename()), page)
}

fn write(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    for (name, section, cmd) in commands() {
        // Built, so that subcommands carry their full names (`lbctl-show`) and global options.
        let mut built = cmd.clone().disable_help_subcommand(true);
        built.build();
        man_pages(&built, section, &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir)?;
            let mut cmd = cmd.clone();
            clap_complete::generate_to(shell, &mut cmd, name, &dir)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: spanlb-gendocs DIR");
        return ExitCode::from(2);
    };
    match write(Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spanlb-gendocs: {out}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_page_and_completion_is_written() {
        let dir = std::env::temp_dir().join(format!("spanlb-gendocs-{}", std::process::id()));
        super::write(&dir).unwrap();
        for f in [
            "man/lbd.8",
            "man/bgpd.8",
            "man/lbctl.1",
            "man/bgpctl.1",
            "man/lbctl-show-pools.1",
            "man/bgpctl-announce.1",
            "completions/bash/lbctl.bash",
            "completions/zsh/_bgpctl",
            "completions/fish/lbd.fish",
        ] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(!text.is_empty(), "{f} is empty");
        }
        let page = std::fs::read_to_string(dir.join("man/lbctl.1")).unwrap();
        assert!(
            page.contains("device\\-group"),
            "lbctl's subcommands are listed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
