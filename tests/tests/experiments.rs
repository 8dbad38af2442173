//! The Docklet experiments run end to end at a small size: four hosts with tenetd,
//! containers attached by tenet-cni in both designs, the kernel baselines and egress
//! through central and distributed gateways all carry real TCP, and the results file
//! says so. The numbers
//! themselves are `tenet-bench containers`' (bench/results), never checked here.

use std::process::Command;

use serde_json::Value;
use tests::{binary, TempDir};

#[test]
fn the_container_experiments_carry_traffic_in_every_setup() {
    let dir = TempDir::new("exp").unwrap();
    let out = Command::new(binary("tenet-bench"))
        .args(["containers", "--counts", "2", "--seconds", "1", "--out"])
        .arg(dir.path())
        .output()
        .expect("tenet-bench runs");
    assert!(
        out.status.success(),
        "tenet-bench containers failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("containers.json")).unwrap())
            .unwrap();
    let figures = results["internal"]
        .as_array()
        .unwrap()
        .iter()
        .chain(results["egress"].as_array().unwrap());
    for figure in figures {
        assert!(figure["gbps"].as_f64().unwrap() > 0.01, "{figure}");
    }
    let designs = results["designs"].as_array().unwrap();
    assert_eq!(designs.len(), 2, "shared and dedicated with 2 tenants");
    for point in designs {
        assert_eq!(point["tenants"], 2);
        assert!(
            point["gbps_min"].as_f64().unwrap() > 0.01,
            "every tenant's pair carried traffic: {point}"
        );
    }
    let gateways = results["gateways"].as_array().unwrap();
    let placements: Vec<&str> = gateways
        .iter()
        .map(|g| g["placement"].as_str().unwrap())
        .collect();
    assert_eq!(placements, ["central", "distributed"], "{gateways:?}");
    for point in gateways {
        assert!(
            point["gbps_min"].as_f64().unwrap() > 0.01,
            "every tenant downloaded through its gateway: {point}"
        );
    }
}

#[test]
fn the_cluster_experiment_counts_from_the_real_code_and_agents_converge() {
    let dir = TempDir::new("clexp").unwrap();
    let out = Command::new(binary("tenet-bench"))
        .args([
            "cluster",
            "--hosts",
            "40",
            "--tenants",
            "400",
            "--sample",
            "4",
            "--agents",
            "8",
            "--writes",
            "3",
            "--preload",
            "50",
            "--settle",
            "1",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("tenet-bench runs");
    assert!(
        out.status.success(),
        "tenet-bench cluster failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json")).unwrap()).unwrap();
    // 40 hosts (4 keys each: registration, switch, ports, traffic report), 400 tenants
    // (tenant and id claim), 800 endpoints, 40 gateways' placement records (one tenant
    // in ten floats), and the member index of the endpoints' and gateways' hosts.
    assert_eq!(r["keys"], 40 + 40 * 4 + 400 * 2 + 800 + 40 + 800 + 40);
    let tenants = r["tenants_per_host"]["median"].as_u64().unwrap();
    let tunnels = r["tunnels_per_host"]["median"].as_u64().unwrap();
    assert!((5..=40).contains(&tenants), "{r}");
    assert!((1..40).contains(&tunnels), "{r}");
    let writes = r["convergence_ms"].as_array().unwrap();
    assert_eq!(writes.len(), 3, "every agent had every write: {r}");
}
