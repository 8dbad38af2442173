//! A run's results: every measurement (`results.csv`, `results.json`), the summary a
//! reader wants (`summary.txt`: medians over rounds and medians of per-round ratios to
//! testpmd and to OVS) and a chart (`chart.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::peers::Switch;
use crate::runner::{Options, Row};

/// One switch in one scenario and size, over the rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario.
    pub scenario: String,
    /// Frame size.
    pub size: String,
    /// Switch.
    pub switch: Switch,
    /// Rounds that produced a number.
    pub rounds: usize,
    /// Median Mpps over rounds.
    pub mpps: Option<f64>,
    /// Lowest round.
    pub mpps_min: Option<f64>,
    /// Highest round.
    pub mpps_max: Option<f64>,
    /// Median Gbit/s on the wire.
    pub gbps: Option<f64>,
    /// Median cycles per packet.
    pub cycles_per_pkt: Option<f64>,
    /// Median of the per-round ratios to testpmd.
    pub vs_testpmd: Option<f64>,
    /// Median of the per-round ratios to OVS.
    pub vs_ovs: Option<f64>,
    /// Per-round ratios to OVS, in round order.
    pub vs_ovs_rounds: Vec<f64>,
    /// Rounds whose check passed, of those checked.
    pub checks: (usize, usize),
    /// Median p99 latency over rounds, ns (pvp).
    pub p99_ns: Option<u64>,
    /// Median rate of changes made through the API during the window (`--churn`).
    #[serde(default)]
    pub changes_per_s: Option<f64>,
    /// Median CPU use of the switch's busiest thread in the window, in cores.
    #[serde(default)]
    pub cpu: Option<f64>,
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Summaries of `rows`, in scenario, size and switch order.
pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    let mut groups: BTreeMap<(usize, String, Switch), Vec<&Row>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for r in rows {
        let key = (r.scenario.clone(), r.size.clone());
        let at = order.iter().position(|k| *k == key).unwrap_or_else(|| {
            order.push(key.clone());
            order.len() - 1
        });
        groups
            .entry((at, r.size.clone(), r.switch))
            .or_default()
            .push(r);
    }
    let find = |scenario: &str, size: &str, round: usize, switch: Switch| {
        rows.iter()
            .find(|r| {
                r.scenario == scenario && r.size == size && r.round == round && r.switch == switch
            })
            .and_then(|r| r.mpps)
    };
    groups
        .into_iter()
        .map(|((at, size, switch), rows_of)| {
            let scenario = order[at].0.clone();
            let mut mpps: Vec<f64> = rows_of.iter().filter_map(|r| r.mpps).collect();
            let mut gbps: Vec<f64> = rows_of.iter().filter_map(|r| r.gbps).collect();
            let mut cycles: Vec<f64> = rows_of.iter().filter_map(|r| r.cycles_per_pkt).collect();
            let mut p99: Vec<f64> = rows_of
                .iter()
                .filter_map(|r| r.latency.map(|l| l.p99_ns as f64))
                .collect();
            let ratios = |peer: Switch| -> Vec<f64> {
                rows_of
                    .iter()
                    .filter_map(|r| Some(r.mpps? / find(&scenario, &size, r.round, peer)?))
                    .filter(|x| x.is_finite())
                    .collect()
            };
            let mut vs_testpmd = ratios(Switch::Testpmd);
            let vs_ovs_rounds = ratios(Switch::Ovs);
            let mut vs_ovs = vs_ovs_rounds.clone();
            let checked: Vec<bool> = rows_of.iter().filter_map(|r| r.check).collect();
            let mut changes: Vec<f64> = rows_of.iter().filter_map(|r| r.changes_per_s).collect();
            let mut cpu: Vec<f64> = rows_of.iter().filter_map(|r| r.cpu).collect();
            Summary {
                rounds: mpps.len(),
                mpps_min: mpps.iter().copied().reduce(f64::min),
                mpps_max: mpps.iter().copied().reduce(f64::max),
                mpps: median(&mut mpps),
                gbps: median(&mut gbps),
                cycles_per_pkt: median(&mut cycles),
                vs_testpmd: (switch != Switch::Testpmd)
                    .then(|| median(&mut vs_testpmd))
                    .flatten(),
                vs_ovs: (switch != Switch::Ovs)
                    .then(|| median(&mut vs_ovs))
                    .flatten(),
                vs_ovs_rounds: if switch == Switch::Ovs {
                    Vec::new()
                } else {
                    vs_ovs_rounds
                },
                checks: (checked.iter().filter(|&&c| c).count(), checked.len()),
                p99_ns: median(&mut p99).map(|v| v as u64),
                changes_per_s: median(&mut changes),
                cpu: median(&mut cpu),
                scenario,
                size,
                switch,
            }
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The summary as a table.
pub fn table(summaries: &[Summary]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<10} {:>5} {:<8} {:>21} {:>7} {:>8} {:>9} {:>6} {:>9} {:>5} {:>6}",
        "scenario",
        "size",
        "switch",
        "Mpps med (min-max)",
        "Gbit/s",
        "cyc/pkt",
        "/testpmd",
        "/ovs",
        "p99 us",
        "cpu%",
        "check"
    );
    for s in summaries {
        let range = format!(
            "{} ({}-{})",
            opt(s.mpps, 2),
            opt(s.mpps_min, 1),
            opt(s.mpps_max, 1)
        );
        let check = match s.checks {
            (_, 0) => "-".to_owned(),
            (ok, n) if ok == n => "ok".to_owned(),
            (ok, n) => format!("{ok}/{n}"),
        };
        let _ = writeln!(
            t,
            "{:<10} {:>5} {:<8} {:>21} {:>7} {:>8} {:>9} {:>6} {:>9} {:>5} {:>6}",
            s.scenario,
            s.size,
            s.switch.name(),
            range,
            opt(s.gbps, 2),
            opt(s.cycles_per_pkt, 0),
            opt(s.vs_testpmd, 2),
            opt(s.vs_ovs, 2),
            opt(s.p99_ns.map(|n| n as f64 / 1000.0), 1),
            opt(s.cpu.map(|c| c * 100.0), 1),
            check
        );
    }
    for s in summaries {
        if let Some(rate) = s.changes_per_s {
            let _ = writeln!(
                t,
                "{} {} {}: {rate:.0} tenant and endpoint changes a second through the API during the window",
                s.scenario,
                s.size,
                s.switch.name()
            );
        }
    }
    t.push_str(
        "\nMpps: median over rounds (min-max). Gbit/s: on the wire (frame + FCS + preamble + gap).\n\
         /testpmd, /ovs: median of the per-round ratios of this switch's rate to the peer's.\n\
         cyc/pkt: busy cycles per packet as each switch counts them (tenetd RESULT, testpmd\n\
         --record-core-cycles, OVS pmd-stats-show). cpu%: the busiest thread's time on a CPU\n\
         in the window (the kernel's account; OVS not measured). check: tenetd dropped nothing / OVS's\n\
         datapath held the scenario's action / the generator got frames back.\n",
    );
    t
}

/// Writes every measurement so far (after each one, so an interrupted run keeps them).
pub fn write_rows(out: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "round,scenario,size,switch,mpps,gbps,min_1s_mpps,max_1s_mpps,cycles_per_pkt,check,lost,changes_per_s,p50_ns,p99_ns,p999_ns,cpu,note\n",
    );
    for r in rows {
        let lat = |f: fn(&crate::stats::LatencySummary) -> u64| {
            r.latency
                .as_ref()
                .map_or(String::new(), |l| f(l).to_string())
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"",
            r.round,
            r.scenario,
            r.size,
            r.switch.name(),
            r.mpps.map_or(String::new(), |v| format!("{v:.3}")),
            r.gbps.map_or(String::new(), |v| format!("{v:.3}")),
            r.min_mpps.map_or(String::new(), |v| format!("{v:.3}")),
            r.max_mpps.map_or(String::new(), |v| format!("{v:.3}")),
            r.cycles_per_pkt
                .map_or(String::new(), |v| format!("{v:.1}")),
            r.check
                .map_or(String::new(), |c| if c { "ok" } else { "FAIL" }.to_owned()),
            r.lost.map_or(String::new(), |v| v.to_string()),
            r.changes_per_s.map_or(String::new(), |v| format!("{v:.0}")),
            lat(|l| l.p50_ns),
            lat(|l| l.p99_ns),
            lat(|l| l.p999_ns),
            r.cpu.map_or(String::new(), |v| format!("{v:.3}")),
            r.note.replace('"', "'")
        );
    }
    std::fs::write(out.join("results.csv"), csv).context("writing results.csv")?;
    Ok(())
}

/// The whole run: results, summary, JSON and chart.
#[derive(Serialize, Deserialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Topology.
    pub topology: crate::scenario::Topology,
    /// Every measurement.
    pub rows: Vec<Row>,
    /// The summaries.
    pub summary: Vec<Summary>,
}

/// Writes `summary.txt`, `results.json` and `chart.svg` (and `results.csv`).
pub fn write_all(out: &Path, rows: &[Row], options: &Options) -> anyhow::Result<()> {
    write_rows(out, rows)?;
    let summary = summarize(rows);
    let env = std::fs::read_to_string(out.join("env.txt")).unwrap_or_default();
    std::fs::write(
        out.join("summary.txt"),
        format!("{env}\n{}", table(&summary)),
    )?;
    let results = Results {
        command: options.command_line.clone(),
        topology: options.topology,
        rows: rows.to_vec(),
        summary: summary.clone(),
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(
        out.join("chart.svg"),
        chart(
            &summary,
            &format!("tenet-bench {} ({})", options.topology, sizes_of(&summary)),
        ),
    )?;
    Ok(())
}

fn sizes_of(summary: &[Summary]) -> String {
    let mut sizes: Vec<&str> = Vec::new();
    for s in summary {
        if !sizes.contains(&s.size.as_str()) {
            sizes.push(&s.size);
        }
    }
    format!("{} B frames", sizes.join(", "))
}

/// A grouped bar chart: median Mpps per scenario and size, one bar per switch, with the
/// rounds' range as a whisker.
pub fn chart(summary: &[Summary], title: &str) -> String {
    let mut groups: Vec<(String, Vec<&Summary>)> = Vec::new();
    for s in summary {
        let label = format!("{} {}", s.scenario, s.size);
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(s),
            None => groups.push((label, vec![s])),
        }
    }
    let switches: Vec<Switch> = {
        let mut v: Vec<Switch> = summary.iter().map(|s| s.switch).collect();
        v.sort();
        v.dedup();
        v
    };
    let top = summary
        .iter()
        .filter_map(|s| s.mpps_max.or(s.mpps))
        .fold(1.0f64, f64::max)
        * 1.1;
    let (left, bottom, plot_h) = (60.0, 60.0, 300.0);
    let bar_w = 18.0;
    let group_w = bar_w * switches.len() as f64 + 24.0;
    let width = left + group_w * groups.len() as f64 + 20.0;
    let height = plot_h + bottom + 60.0;
    let y = |v: f64| 40.0 + plot_h * (1.0 - v / top);
    let color = |s: Switch| match s {
        Switch::Tenet => "#2b6cb0",
        Switch::Testpmd => "#a0aec0",
        Switch::Ovs => "#dd6b20",
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{left}\" y=\"20\" font-size=\"14\">{}</text>",
        escape(title)
    );
    for k in 0..=5 {
        let v = top * k as f64 / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e2e8f0\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            width - 20.0,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"14\" y=\"{:.0}\" transform=\"rotate(-90 14 {:.0})\" text-anchor=\"middle\">Mpps (median of rounds)</text>",
        40.0 + plot_h / 2.0,
        40.0 + plot_h / 2.0
    );
    for (g, (label, members)) in groups.iter().enumerate() {
        let x0 = left + 12.0 + g as f64 * group_w;
        for (i, switch) in switches.iter().enumerate() {
            let Some(s) = members.iter().find(|s| s.switch == *switch) else {
                continue;
            };
            let Some(m) = s.mpps else {
                continue;
            };
            let x = x0 + i as f64 * bar_w;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {m:.2} Mpps</title></rect>",
                y(m),
                bar_w - 2.0,
                y(0.0) - y(m),
                color(*switch),
                escape(label),
                switch.name()
            );
            if let (Some(lo), Some(hi)) = (s.mpps_min, s.mpps_max) {
                let cx = x + (bar_w - 2.0) / 2.0;
                let _ = writeln!(
                    svg,
                    "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                    y(lo),
                    y(hi)
                );
            }
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
            x0 + bar_w * switches.len() as f64 / 2.0,
            y(0.0) + 16.0,
            escape(label)
        );
    }
    for (i, switch) in switches.iter().enumerate() {
        let x = left + i as f64 * 90.0;
        let yy = height - 16.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{yy:.0}\">{}</text>",
            yy - 10.0,
            color(*switch),
            x + 16.0,
            switch.name()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: usize, switch: Switch, mpps: f64) -> Row {
        Row {
            round,
            scenario: "route".to_owned(),
            size: "64".to_owned(),
            switch,
            mpps: Some(mpps),
            gbps: Some(mpps * 0.672),
            min_mpps: None,
            max_mpps: None,
            cycles_per_pkt: Some(70.0),
            check: Some(true),
            lost: None,
            changes_per_s: None,
            latency: None,
            cpu: Some(1.0),
            note: String::new(),
        }
    }

    #[test]
    fn ratios_are_medians_of_per_round_ratios() {
        let rows = vec![
            row(1, Switch::Tenet, 30.0),
            row(1, Switch::Ovs, 15.0),
            row(1, Switch::Testpmd, 60.0),
            row(2, Switch::Tenet, 40.0),
            row(2, Switch::Ovs, 10.0),
            row(2, Switch::Testpmd, 50.0),
            row(3, Switch::Tenet, 33.0),
            row(3, Switch::Ovs, 11.0),
            row(3, Switch::Testpmd, 66.0),
        ];
        let s = summarize(&rows);
        let tenet = s.iter().find(|s| s.switch == Switch::Tenet).unwrap();
        assert_eq!(tenet.mpps, Some(33.0));
        assert_eq!(tenet.vs_ovs, Some(3.0), "rounds: 2, 4, 3");
        assert_eq!(tenet.vs_testpmd, Some(0.5), "rounds: 0.5, 0.8, 0.5");
        assert_eq!(tenet.vs_ovs_rounds, [2.0, 4.0, 3.0]);
        let ovs = s.iter().find(|s| s.switch == Switch::Ovs).unwrap();
        assert_eq!(ovs.vs_ovs, None);
        let text = table(&s);
        assert!(text.contains("route"), "{text}");
        let svg = chart(&s, "t");
        assert!(svg.starts_with("<svg") && svg.matches("<rect").count() >= 4);
    }

    #[test]
    fn a_failed_round_has_no_ratio() {
        let mut failed = row(1, Switch::Ovs, 0.0);
        failed.mpps = None;
        let s = summarize(&[row(1, Switch::Tenet, 30.0), failed]);
        let tenet = s.iter().find(|s| s.switch == Switch::Tenet).unwrap();
        assert_eq!(tenet.vs_ovs, None);
        assert_eq!(
            s.iter().find(|s| s.switch == Switch::Ovs).unwrap().rounds,
            0
        );
    }
}
