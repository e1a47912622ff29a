//! What a person sees: the real `koop` in a tmux pane (a real terminal of a given size) against
//! the test server, the screen and its scroll-back read back with `capture-pane` after the
//! command has exited, and sampled while it runs. Every result line must be there, no bar may be
//! left behind, no line may be wider than the pane, and no bar may show a made-up total.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use koop_testkit::{GeneratedContent, TestLayer, TestServer};

/// Sizes people use: a wide terminal and the classic 80 × 24.
const SIZES: [(u16, u16); 2] = [(120, 30), (80, 24)];

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// A tmux server of its own (`-L`), so the tests never touch a person's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        Self {
            socket: format!(
                "koop-tests-{}-{}",
                std::process::id(),
                SESSIONS.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("tmux (Debian's tmux) runs")?;
        ensure!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The pane's whole history and screen, wrapped lines joined (`-J`), so a line wider than
    /// the pane shows as one long line.
    fn capture(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "koop"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// What the pane showed: the final screen with its scroll-back, and the screens sampled while
/// the command ran.
struct Seen {
    last: String,
    during: Vec<String>,
    width: usize,
}

/// Runs `command` (a shell command line) in a new `width` × `height` pane and waits for it to
/// exit, sampling the screen every 50 ms.
fn in_pane(command: &str, width: u16, height: u16) -> Result<Seen> {
    in_pane_interrupted(command, width, height, None)
}

/// As [`in_pane`], pressing Ctrl-C once the screen shows `interrupt_when`.
fn in_pane_interrupted(
    command: &str,
    width: u16,
    height: u16,
    interrupt_when: Option<&str>,
) -> Result<Seen> {
    let tmux = Tmux::new();
    // The shell runs a trap (not an ignore, which koop would inherit) so that Ctrl-C stops koop
    // and the shell goes on to print the exit code.
    let script = format!("trap true INT; {command}; echo KOOP-EXIT:$?; sleep 600");
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "koop",
        "-x",
        &width.to_string(),
        "-y",
        &height.to_string(),
        "sh",
        "-c",
        &script,
    ])?;
    // A wide history, so nothing scrolls out of reach.
    tmux.run(&["set-option", "-t", "koop", "history-limit", "10000"])?;
    let started = Instant::now();
    let mut during = Vec::new();
    let mut interrupted = false;
    loop {
        let screen = tmux.run(&["capture-pane", "-p", "-J", "-t", "koop"])?;
        if screen.contains("KOOP-EXIT:") {
            break;
        }
        if interrupt_when.is_some_and(|text| screen.contains(text)) && !interrupted {
            tmux.run(&["send-keys", "-t", "koop", "C-c"])?;
            interrupted = true;
        }
        during.push(screen);
        if started.elapsed() > Duration::from_secs(180) {
            bail!("still running after 180 s: {}", tmux.capture()?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Seen {
        last: tmux.capture()?,
        during,
        width: usize::from(width),
    })
}

/// Lines a bar leaves when it is not cleared.
fn is_bar(line: &str) -> bool {
    [
        "layers [",
        "exporting",
        "downloading",
        "extracting",
        "waiting for",
    ]
    .iter()
    .any(|mark| line.contains(mark))
}

impl Seen {
    /// The lines of the final screen and scroll-back, up to the exit marker.
    fn lines(&self) -> Vec<&str> {
        self.last
            .lines()
            .take_while(|line| !line.starts_with("KOOP-EXIT:"))
            .collect()
    }

    fn exit_code(&self) -> Option<i32> {
        self.last
            .lines()
            .find_map(|line| line.strip_prefix("KOOP-EXIT:"))
            .and_then(|code| code.trim().parse().ok())
    }

    /// The checks every command's screen must pass. `data` marks lines that print data (paths,
    /// which are as long as they are); log lines quote what servers said, as long as it is;
    /// every other line is koop's own and fits the pane.
    fn check_clean(&self, data: &str) -> Result<()> {
        let lines = self.lines();
        for line in &lines {
            let quoted = line.contains(data)
                || [" WARN", " ERROR", "error:"]
                    .iter()
                    .any(|level| line.starts_with(level));
            ensure!(
                quoted || line.chars().count() <= self.width,
                "a line wider than the {}-column pane ({}): {line:?}",
                self.width,
                line.chars().count()
            );
            ensure!(
                !is_bar(line),
                "a bar left on the screen after the command exited: {line:?}\n{}",
                self.last
            );
        }
        for screen in &self.during {
            for line in screen.lines() {
                // Bars are drawn the full width of the pane, so tmux joins them as if wrapped:
                // each pane-wide piece must itself start a bar, or a bar was wider than the pane.
                if !line.contains(data) && line.chars().count() > self.width {
                    let chars: Vec<char> = line.chars().collect();
                    for piece in chars.chunks(self.width) {
                        let piece: String = piece.iter().collect();
                        ensure!(
                            starts_a_bar(&piece),
                            "a bar wider than the {}-column pane while running: {piece:?} in {line:?}",
                            self.width
                        );
                    }
                }
                // Before the size is known a download bar shows no total at all.
                ensure!(
                    !(line.contains("downloading") && line.contains("/100 B")),
                    "a made-up total: {line:?}"
                );
            }
        }
        Ok(())
    }
}

/// Whether a row of the pane begins a bar: a spinner (braille), or tracing-indicatif's footer.
fn starts_a_bar(row: &str) -> bool {
    let row = row.trim_start();
    row.is_empty()
        || row.starts_with("...and")
        || row
            .chars()
            .next()
            .is_some_and(|first| ('\u{2800}'..='\u{28FF}').contains(&first))
}

/// The shell command line of `koop` against `site`, its cache in `cache`.
fn koop_command(site: &TestServer, cache: &Path, args: &str) -> String {
    format!(
        "env -u KOOPCACHE_DIR -u KOOP_LOG KOORDINATES_API_KEY={} {} --domain {} --cache-dir {} {args}",
        site.api_key(),
        env!("CARGO_BIN_EXE_koop"),
        site.base_url(),
        cache.display()
    )
}

/// A site with eight layers whose exports take 1–2 s and whose downloads are 1–6 MB.
async fn eight_layers() -> Result<(TestServer, Vec<u64>)> {
    let site = TestServer::start().await?;
    let ids: Vec<u64> = (7401..=7408).collect();
    for (index, id) in ids.iter().enumerate() {
        site.add_layer(TestLayer::generated(
            *id,
            &format!("Terminal layer {index}"),
            GeneratedContent::Polygons {
                target_bytes: 1_000_000 + 700_000 * index as u64,
            },
        ))?;
        site.set_export_latency(*id, Duration::from_millis(1000 + 150 * index as u64));
    }
    Ok((site, ids))
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_in_a_real_terminal_leaves_every_result_line_and_no_bar() -> Result<()> {
    for (width, height) in SIZES {
        // A site of its own for each size: a second mirror of the same site reuses the exports
        // at once and may finish before a bar is ever drawn.
        let (site, ids) = eight_layers().await?;
        let cache = tempfile::tempdir()?;
        let list = cache.path().join("layers.txt");
        std::fs::write(
            &list,
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )?;
        let command = koop_command(
            &site,
            &cache.path().join("cache"),
            &format!("mirror --from {} --jobs 4", list.display()),
        );
        let seen = tokio::task::block_in_place(|| in_pane(&command, width, height))?;
        ensure!(seen.exit_code() == Some(0), "{}", seen.last);
        ensure!(
            seen.during.iter().any(|screen| screen.contains("layers [")),
            "{width}×{height}: no progress was ever drawn"
        );
        seen.check_clean(&cache.path().display().to_string())
            .with_context(|| format!("{width}×{height}"))?;
        let lines = seen.lines();
        for id in &ids {
            ensure!(
                lines.iter().any(|line| {
                    let mut words = line.split_whitespace();
                    words.next() == Some(&id.to_string()) && words.next() == Some("downloaded")
                }),
                "{width}×{height}: no result line for layer {id}:\n{}",
                seen.last
            );
        }
        ensure!(
            lines
                .iter()
                .any(|line| line.starts_with("mirrored 8 layers in")),
            "{width}×{height}: no summary line:\n{}",
            seen.last
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn get_in_a_real_terminal_prints_every_path_and_no_bar() -> Result<()> {
    let (site, ids) = eight_layers().await?;
    for (width, height) in SIZES {
        let cache = tempfile::tempdir()?;
        let args: Vec<String> = ids.iter().take(3).map(u64::to_string).collect();
        let command = koop_command(&site, cache.path(), &format!("get {}", args.join(" ")));
        let seen = tokio::task::block_in_place(|| in_pane(&command, width, height))?;
        ensure!(seen.exit_code() == Some(0), "{}", seen.last);
        seen.check_clean(&cache.path().display().to_string())
            .with_context(|| format!("{width}×{height}"))?;
        let paths: Vec<&str> = seen
            .lines()
            .into_iter()
            .filter(|line| {
                Path::new(line)
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("gpkg"))
            })
            .collect();
        ensure!(
            paths.len() == 3,
            "{width}×{height}: {} paths:\n{}",
            paths.len(),
            seen.last
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_in_a_real_terminal_leaves_its_table_and_no_bar() -> Result<()> {
    for (width, height) in SIZES {
        let cache = tempfile::tempdir()?;
        let command = format!(
            "env -u KOORDINATES_API_KEY -u KOOPCACHE_DIR {} --cache-dir {} demo",
            env!("CARGO_BIN_EXE_koop"),
            cache.path().display()
        );
        let seen = tokio::task::block_in_place(|| in_pane(&command, width, height))?;
        ensure!(seen.exit_code() == Some(0), "{}", seen.last);
        seen.check_clean(&cache.path().display().to_string())
            .with_context(|| format!("{width}×{height}"))?;
        let lines = seen.lines();
        for id in koop_testkit::DEMO_LAYER_IDS {
            ensure!(
                lines
                    .iter()
                    .filter(|line| line.split_whitespace().next() == Some(&id.to_string()))
                    .count()
                    >= 1,
                "{width}×{height}: no line for demo layer {id}:\n{}",
                seen.last
            );
        }
        ensure!(
            lines
                .iter()
                .any(|line| line.contains("every layer is on disk, fetched exactly once")),
            "{width}×{height}:\n{}",
            seen.last
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_a_real_terminal_leaves_a_clean_screen_and_one_summary() -> Result<()> {
    let (site, ids) = eight_layers().await?;
    let (width, height) = SIZES[1];
    let cache = tempfile::tempdir()?;
    let list = cache.path().join("layers.txt");
    std::fs::write(
        &list,
        ids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let command = koop_command(
        &site,
        &cache.path().join("cache"),
        &format!("mirror --from {} --jobs 2", list.display()),
    );
    let seen = tokio::task::block_in_place(|| {
        in_pane_interrupted(&command, width, height, Some("exporting"))
    })?;
    ensure!(
        seen.exit_code() == Some(130),
        "exit {:?}: {}",
        seen.exit_code(),
        seen.last
    );
    seen.check_clean(&cache.path().display().to_string())?;
    let lines = seen.lines();
    ensure!(
        lines
            .iter()
            .filter(|line| line.starts_with("koop: interrupted"))
            .count()
            == 1,
        "one interruption line:\n{}",
        seen.last
    );
    ensure!(
        lines
            .iter()
            .any(|line| line.starts_with("mirrored ") && line.contains("8 interrupted")),
        "a summary of what was kept:\n{}",
        seen.last
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_the_demo_clears_its_bars_and_gives_the_terminal_back_as_it_was() -> Result<()> {
    let (width, height) = SIZES[0];
    let cache = tempfile::tempdir()?;
    // The terminal's settings after koop, as `stty` reports them: `echoctl` as before.
    let command = format!(
        "env -u KOORDINATES_API_KEY -u KOOPCACHE_DIR {} --cache-dir {} demo; code=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-*echoctl'; (exit $code)",
        env!("CARGO_BIN_EXE_koop"),
        cache.path().display()
    );
    let seen = tokio::task::block_in_place(|| {
        in_pane_interrupted(&command, width, height, Some("exporting"))
    })?;
    ensure!(
        seen.exit_code() == Some(130),
        "exit {:?}: {}",
        seen.exit_code(),
        seen.last
    );
    seen.check_clean(&cache.path().display().to_string())?;
    let lines = seen.lines();
    ensure!(
        lines
            .iter()
            .any(|line| line.starts_with("koop demo: interrupted")),
        "{}",
        seen.last
    );
    ensure!(
        lines.iter().any(|line| line.trim() == "echoctl"),
        "the terminal echoes control characters again: {}",
        seen.last
    );
    Ok(())
}
