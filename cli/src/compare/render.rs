//! `compare`'s result as text, and as a chart of PSS over time (SVG).
//! Renders a [`Comparison`]: reads nothing, computes nothing.

use super::{Comparison, Phase};
use crate::util::*;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

/// The comparison for a terminal: the figures of both phases side by side,
/// the held-ksmd figures, the ideal, and the processes with the preload.
pub fn render_text(c: &Comparison) -> String {
    let mut o = String::new();
    figures(&mut o, c);
    held(&mut o, c);
    ideal(&mut o, c);
    per_process(&mut o, c);
    o
}

/// The head line and the table of both phases' last looks.
fn figures(o: &mut String, c: &Comparison) {
    let (a, b) = (&c.without.last, &c.with.last);
    let _ = writeln!(
        o,
        "{} x {} (mode {}); without: {}, with: {}",
        c.workers,
        shown(&c.command.join(" ")),
        c.mode.name(),
        c.without.ended.words(),
        c.with.ended.words()
    );
    let _ = writeln!(
        o,
        "{:<16} {:>14} {:>14} {:>14}",
        "", "WITHOUT", "WITH", "SAVED"
    );
    let row = |o: &mut String, name: &str, x: i64, y: i64, bytes: bool| {
        let f = |v: i64| {
            if bytes {
                human_bytes_i(v)
            } else {
                v.to_string()
            }
        };
        let _ = writeln!(o, "{name:<16} {:>14} {:>14} {:>14}", f(x), f(y), f(x - y));
    };
    row(
        o,
        "processes",
        a.processes as i64,
        b.processes as i64,
        false,
    );
    row(o, "RSS", a.rss_bytes as i64, b.rss_bytes as i64, true);
    row(o, "PSS", a.pss_bytes as i64, b.pss_bytes as i64, true);
    let _ = writeln!(
        o,
        "{:<16} {:>14} {:>14}",
        "merged pages",
        a.merging_pages + a.zero_pages,
        b.merging_pages + b.zero_pages
    );
    let _ = writeln!(
        o,
        "{:<16} {:>14} {:>14}",
        "KSM profit",
        human_bytes_i(a.profit),
        human_bytes_i(b.profit)
    );
    ksmd_cpu(o, c);
}

/// ksmd's CPU in each phase, and the merged memory it bought.
fn ksmd_cpu(o: &mut String, c: &Comparison) {
    let cpu = |p: &Phase| {
        p.ksmd_cpu_seconds
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "n/a".into())
    };
    let per_cpu = |p: &Phase| {
        p.merged_bytes_per_ksmd_cpu_second
            .map(|b| human_bytes(b as u64))
            .unwrap_or_else(|| "n/a".into())
    };
    let _ = writeln!(
        o,
        "{:<16} {:>14} {:>14}",
        "ksmd CPU",
        cpu(&c.without),
        cpu(&c.with)
    );
    let _ = writeln!(
        o,
        "{:<16} {:>14} {:>14}  (merged bytes per ksmd CPU-second; ksmd's CPU is the host's)",
        "merged per CPU-s",
        per_cpu(&c.without),
        per_cpu(&c.with)
    );
}

/// `--hold-ksmd`: the pool before ksmd ran against itself at the end.
fn held(o: &mut String, c: &Comparison) {
    if let Some(b) = c
        .with
        .before_merge
        .filter(|b| b.merging_pages + b.zero_pages > 0)
    {
        let _ = writeln!(
            o,
            "warning: {} pages of the pool merged while ksmd was held (did something else start ksmd?): \
             the figure before merging is too low",
            b.merging_pages + b.zero_pages
        );
    }
    if let Some(h) = &c.held_ksmd {
        match (
            h.pss_before_merge_bytes,
            h.saved_pss_bytes,
            h.ideal_savings_bytes,
        ) {
            (Some(b), Some(s), Some(i)) => {
                let pct = h
                    .percent_of_ideal
                    .map(|p| format!("{p:.0}%"))
                    .unwrap_or_else(|| "n/a".into());
                let _ = writeln!(
                    o,
                    "ksmd held while the pool with the preload loaded: PSS {} before ksmd ran, {} at the end; \
                     saved {} = {pct} of that pool's ideal ({})",
                    human_bytes(b),
                    human_bytes(c.with.last.pss_bytes),
                    human_bytes_i(s),
                    human_bytes(i)
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "ksmd held while the pool with the preload loaded: {} (no figure before merging)",
                    c.with.ended.words()
                );
            }
        }
    }
}

/// The estimator's ideal, and the share of it saved.
fn ideal(o: &mut String, c: &Comparison) {
    let against = if c.held_ksmd.is_some() {
        " (against the pool without the preload: separate starts, varies run to run)"
    } else {
        ""
    };
    match (c.ideal_savings_bytes, c.percent_of_ideal) {
        (Some(i), Some(p)) => {
            let _ = writeln!(
                o,
                "estimator's ideal: {}; PSS saved = {p:.0}% of ideal{against}",
                human_bytes(i)
            );
        }
        (Some(i), None) => {
            let _ = writeln!(o, "estimator's ideal: {}", human_bytes(i));
        }
        _ => {
            let _ = writeln!(
                o,
                "estimator's ideal: n/a (processes exited before settling)"
            );
        }
    }
}

/// Which engine covers each process with the preload.
fn per_process(o: &mut String, c: &Comparison) {
    if !c.with.per_process.is_empty() {
        let _ = writeln!(
            o,
            "with ksmauto, per process:\n{:>8} {:<15} {:<26} {:>10}",
            "PID", "COMM", "COVERED", "MERGED"
        );
        for p in &c.with.per_process {
            let _ = writeln!(
                o,
                "{:>8} {:<15} {:<26} {:>10}",
                p.pid,
                shown(&p.comm),
                shown(&p.coverage),
                p.merged_pages
            );
        }
        for p in &c.with.per_process {
            if let Some(why) = &p.coverage_why {
                let _ = writeln!(o, "pid {} not covered: {}", p.pid, shown(why));
            }
        }
    }
}

pub fn chart(c: &Comparison, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let series = |p: &Phase| {
        p.samples
            .iter()
            .map(|s| (s.t, mib(s.pss_bytes)))
            .collect::<Vec<_>>()
    };
    let (a, b) = (series(&c.without), series(&c.with));
    let xmax = a.iter().chain(&b).map(|p| p.0).fold(1.0, f64::max);
    let ymax = a.iter().chain(&b).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut ch = ChartBuilder::on(&root)
            .caption(
                format!("PSS of {} x {}", c.workers, c.command.join(" ")),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
        ch.configure_mesh()
            .x_desc("seconds")
            .y_desc("PSS (MiB)")
            .draw()?;
        ch.draw_series(LineSeries::new(a, &RED))?
            .label("without ksmauto")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        ch.draw_series(LineSeries::new(b, &BLUE))?
            .label(format!("with ksmauto ({})", c.mode.name()))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        ch.configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| {
        fail(
            EXIT_RUNTIME,
            format!("cannot write {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::phase::Ended;
    use ksmauto_contract::Mode;

    fn phase(preload: bool, cpu: Option<f64>, per_cpu: Option<f64>) -> Phase {
        Phase {
            preload,
            pids: vec![],
            ended: Ended::Settled,
            last: Default::default(),
            samples: vec![],
            per_process: vec![],
            ready_s: None,
            before_merge: None,
            merge_started_s: None,
            ksmd_cpu_seconds: cpu,
            merged_bytes_per_ksmd_cpu_second: per_cpu,
        }
    }

    fn comparison(without: Phase, with: Phase) -> Comparison {
        Comparison {
            command: vec!["prog".into()],
            workers: 2,
            mode: Mode::Process,
            without,
            with,
            saved_pss_bytes: 0,
            ideal_savings_bytes: None,
            percent_of_ideal: None,
            estimate: None,
            held_ksmd: None,
        }
    }

    #[test]
    fn each_phase_shows_ksmd_cpu_and_what_it_merged_per_cpu_second() {
        let c = comparison(
            phase(false, Some(0.0), None),
            phase(true, Some(2.5), Some(4.0 * 1024.0 * 1024.0)),
        );
        let text = render_text(&c);
        let cpu = text.lines().find(|l| l.starts_with("ksmd CPU")).unwrap();
        assert!(cpu.contains("0.00 s") && cpu.contains("2.50 s"), "{text}");
        let per = text
            .lines()
            .find(|l| l.starts_with("merged per CPU-s"))
            .unwrap();
        assert!(per.contains("n/a") && per.contains("4.0 MiB"), "{text}");
        // No ksmd thread found: said so, nothing made up.
        let text = render_text(&comparison(
            phase(false, None, None),
            phase(true, None, None),
        ));
        let cpu = text.lines().find(|l| l.starts_with("ksmd CPU")).unwrap();
        assert_eq!(cpu.matches("n/a").count(), 2, "{text}");
    }
}
