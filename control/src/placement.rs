//! A cluster as one host runs it, computed by every host from the same model, so no
//! host has to write down what the others can work out: which hosts are up, where
//! each tenant's gateway runs (pinned, central on the egress host, or `auto` on the
//! least loaded host), and which tenants this host programs: those with a port or a
//! gateway here (all of them on the shared design's egress host, the hub of its star).
//! A host programs only those, so its tables and tunnels grow with its own tenants,
//! not with the cluster.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::switching::RoleName;
use crate::model::Model;

/// The host of every gateway (tenants with subnets), with only `alive` hosts used:
/// a gateway pinned to a host that is down, or central while the egress host is down,
/// is placed as `auto` is. `auto` gateways go, in tenant-name order, to the living host
/// with the fewest gateways so far (ties by name).
pub fn gateways(model: &Model, alive: &BTreeSet<String>) -> BTreeMap<String, String> {
    let up: Vec<&str> = model
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| alive.contains(*h))
        .collect();
    let egress = model
        .hosts
        .iter()
        .find(|h| h.egress && alive.contains(&h.name))
        .map(|h| h.name.clone());
    let mut load: BTreeMap<&str, usize> = up.iter().map(|h| (*h, 0)).collect();
    let mut placed = BTreeMap::new();
    let mut tenants: Vec<_> = model
        .tenants
        .iter()
        .filter(|t| !t.subnets.is_empty())
        .collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    let mut floating = Vec::new();
    for tenant in tenants {
        let fixed = match tenant.gateway_host.as_deref() {
            Some("auto") => None,
            None | Some("central") => egress.clone(),
            Some(host) => alive.contains(host).then(|| host.to_owned()),
        };
        match fixed {
            Some(host) => {
                if let Some(n) = load.get_mut(host.as_str()) {
                    *n += 1;
                }
                placed.insert(tenant.name.clone(), host);
            }
            None => floating.push(tenant),
        }
    }
    for tenant in floating {
        if let Some(host) = least_loaded(&load) {
            let host = host.to_owned();
            if let Some(n) = load.get_mut(host.as_str()) {
                *n += 1;
            }
            placed.insert(tenant.name.clone(), host);
        }
    }
    placed
}

/// The host with the fewest gateways (the first by name among equals).
pub fn least_loaded<'a>(load: &BTreeMap<&'a str, usize>) -> Option<&'a str> {
    load.iter()
        .min_by_key(|(name, n)| (**n, **name))
        .map(|(name, _)| *name)
}

/// The model host `me` runs when the hosts in `alive` are up: hosts down are gone
/// with their endpoints; gateways are placed (by name); and only the tenants with a
/// port, a gateway or a static claim (`hosts`) here remain, with their endpoints,
/// routes and published ports (all tenants on the shared design's egress host).
pub fn view(model: &Model, alive: &BTreeSet<String>, me: &str) -> Model {
    let up = |name: &str| alive.contains(name) || name == me;
    let gateways = gateways(model, alive);
    let hub =
        model.switch.design == "shared" && model.hosts.iter().any(|h| h.egress && h.name == me);
    let mut here: BTreeSet<&str> = BTreeSet::new();
    for port in &model.ports {
        match port.role {
            Some(RoleName::Access) => here.extend(port.tenant.as_deref()),
            Some(RoleName::Trunk) => {
                here.extend(port.tenants.iter().flatten().map(String::as_str));
            }
            _ => {}
        }
    }
    for tenant in &model.tenants {
        let gateway_here = gateways.get(&tenant.name).is_some_and(|h| h == me);
        if hub || gateway_here || tenant.hosts.iter().any(|h| h == me) {
            here.insert(&tenant.name);
        }
    }
    // A gateway here routes for its peers too.
    for tenant in &model.tenants {
        if gateways.get(&tenant.name).is_some_and(|h| h == me) {
            here.extend(tenant.peers.iter().map(String::as_str));
        }
    }
    let mut view = model.clone();
    view.hosts.retain(|h| up(&h.name));
    view.tenants.retain(|t| here.contains(t.name.as_str()));
    for tenant in &mut view.tenants {
        tenant.hosts.retain(|h| up(h));
        if let Some(host) = gateways.get(&tenant.name) {
            tenant.gateway_host = Some(host.clone());
        }
        tenant.peers.retain(|p| here.contains(p.as_str()));
    }
    view.endpoints
        .retain(|e| here.contains(e.tenant.as_str()) && e.host.as_deref().is_none_or(up));
    view.routes.retain(|r| here.contains(r.tenant.as_str()));
    view.published.retain(|p| here.contains(p.tenant.as_str()));
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn model(extra: &str) -> Model {
        let hosts: String = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[[host]]\nname = \"{h}\"\nunderlay_ip = \"192.0.2.{}/24\"\n{}\n",
                    i + 1,
                    if *h == "c" { "egress = true" } else { "" }
                )
            })
            .collect();
        let text = format!("[switch]\nhost = \"a\"\n{hosts}{extra}");
        Model::of(&Config::parse(&text, |_| None).unwrap())
    }

    fn tenant(name: &str, id: u32, gateway: &str) -> String {
        format!(
            "[[tenant]]\nname = \"{name}\"\nid = {id}\nsubnets = [\"10.{id}.0.1/24\"]\n\
             gateway_host = \"{gateway}\"\n"
        )
    }

    fn all() -> BTreeSet<String> {
        ["a", "b", "c"].iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn gateways_are_pinned_central_or_spread_and_move_off_dead_hosts() {
        let m = model(
            &[
                tenant("p1", 1, "b"),
                tenant("p2", 2, "central"),
                tenant("p3", 3, "auto"),
                tenant("p4", 4, "auto"),
                tenant("p5", 5, "auto"),
            ]
            .concat(),
        );
        let placed = gateways(&m, &all());
        // b and c hold one each already: a takes the first auto, then by name a, b.
        let on = |t: &str| placed[t].as_str();
        assert_eq!(
            [on("p1"), on("p2"), on("p3"), on("p4"), on("p5")],
            ["b", "c", "a", "a", "b"]
        );
        // b goes down: its pinned gateway and the auto ones are placed among a and c.
        let without_b: BTreeSet<String> = ["a", "c"].iter().map(|h| h.to_string()).collect();
        let placed = gateways(&m, &without_b);
        assert!(placed.values().all(|h| h != "b"), "{placed:?}");
        assert_eq!(placed["p2"], "c", "central stays on the living egress host");
        let per_host = |h: &str| placed.values().filter(|v| *v == h).count();
        assert!(per_host("a").abs_diff(per_host("c")) <= 1, "{placed:?}");
    }

    #[test]
    fn a_host_programs_its_own_tenants_only() {
        let m = model(
            &[
                tenant("mine", 1, "b"),
                tenant("gw-here", 2, "a"),
                tenant("elsewhere", 3, "b"),
                "[[port]]\nname = \"c1\"\nbackend = \"null\"\nrole = \"access\"\ntenant = \"mine\"\n"
                    .to_owned(),
                "[[endpoint]]\ntenant = \"elsewhere\"\nmac = \"02:00:00:00:00:03\"\nhost = \"b\"\n"
                    .to_owned(),
                "[[endpoint]]\ntenant = \"mine\"\nmac = \"02:00:00:00:00:01\"\nhost = \"c\"\n"
                    .to_owned(),
            ]
            .concat(),
        );
        let v = view(&m, &all(), "a");
        let names: Vec<&str> = v.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["mine", "gw-here"]);
        assert_eq!(v.endpoints.len(), 1, "only mine's endpoint on c");
        // c goes down: its endpoint goes, and so does c.
        let without_c: BTreeSet<String> = ["a", "b"].iter().map(|h| h.to_string()).collect();
        let v = view(&m, &without_c, "a");
        assert!(v.endpoints.is_empty());
        assert!(v.hosts.iter().all(|h| h.name != "c"));
    }
}
