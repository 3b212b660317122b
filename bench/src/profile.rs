//! `--profile DIR`: a system-wide `perf` profile of one measurement window (the first round of
//! the write phases, the first pipeline round), kept as a text report beside the results: where
//! the machine's CPU went by process and thread, then the runtime's and Postgres's hottest
//! symbols. The sampled data is deleted once reported (it is large); the report is what is kept.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// Samples per second and CPU: enough for a stable top list over a 10 s window, cheap enough
/// not to move the figures being measured by much.
const FREQUENCY: &str = "499";

/// Lines of each symbol list kept in the report.
const TOP: usize = 40;

/// A `perf record -a` running until [`Recording::finish`].
pub struct Recording {
    child: Child,
    data: PathBuf,
    report: PathBuf,
    /// The runtime's process, whose symbols get a list of their own.
    pid: u32,
    title: String,
}

/// Starts recording the whole machine for the window named `name`, if profiling was asked for.
pub async fn start(
    dir: Option<&Path>,
    name: &str,
    title: &str,
    pid: u32,
) -> anyhow::Result<Option<Recording>> {
    let Some(dir) = dir else { return Ok(None) };
    std::fs::create_dir_all(dir)?;
    let data = std::env::temp_dir().join(format!("recsys-bench-{name}.perf"));
    let child = Command::new("perf")
        .args(["record", "-a", "-q", "-F", FREQUENCY, "-o"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting `perf record` (is perf installed and perf_event_paranoid <= 1?)")?;
    eprintln!("profiling {name} (perf record -a)");
    Ok(Some(Recording {
        child,
        data,
        report: dir.join(format!("{name}.txt")),
        pid,
        title: title.to_string(),
    }))
}

impl Recording {
    /// Stops the recording and writes the report; returns its path.
    pub async fn finish(mut self) -> anyhow::Result<PathBuf> {
        let id = self.child.id().context("perf already exited")?;
        // perf writes its data on SIGINT, as on ^C.
        Command::new("kill")
            .args(["-INT", &id.to_string()])
            .status()
            .await?;
        let status = self.child.wait().await?;
        if !self.data.exists() {
            bail!("perf record wrote no data ({status})");
        }
        let by_thread = self.report(&["--sort", "comm"], 20).await?;
        let runtime = self
            .report(
                &["--sort", "dso,symbol", "--pid", &self.pid.to_string()],
                TOP,
            )
            .await?;
        let postgres = self
            .report(&["--sort", "symbol", "--comm", "postgres"], TOP)
            .await?;
        let text = format!(
            "# {}\n\n\
             `perf record -a -F {FREQUENCY}` over the window; percentages are of all samples \
             of the section's selection.\n\n\
             ## CPU by thread name (every process on the machine)\n\n{by_thread}\n\
             ## The runtime (pid {}): hottest symbols\n\n{runtime}\n\
             ## Postgres: hottest symbols\n\n{postgres}",
            self.title, self.pid
        );
        std::fs::write(&self.report, text)?;
        let _ = std::fs::remove_file(&self.data);
        eprintln!("profile written to {}", self.report.display());
        Ok(self.report)
    }

    /// `perf report` of the recorded data with `args`, its comment lines dropped, its first
    /// `top` entries.
    async fn report(&self, args: &[&str], top: usize) -> anyhow::Result<String> {
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percentage",
                "relative",
                "-i",
            ])
            .arg(&self.data)
            .args(args)
            .output()
            .await?;
        if !out.status.success() {
            bail!("perf report: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(top);
        // perf pads every column to the widest symbol and ends filtered lines with `-` marks.
        let trimmed = lines.map(|l| l.trim_end().trim_end_matches([' ', '-']).to_string());
        Ok(trimmed.map(|l| format!("    {l}\n")).collect())
    }
}
