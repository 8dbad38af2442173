//! Container addresses handed out cluster-wide (IPAM). A claim is a record of the
//! model ([`AddressSpec`]), so the store that shares the model decides who gets an
//! address: one host's journal, or the cluster's etcd, where a claim's key must not
//! exist yet (two hosts choosing the same address at once: one write is refused and
//! that host chooses again). The CNI plugin and the Docker driver ask tenetd for
//! addresses instead of keeping their own per host.
//!
//! An address is free when no claim and no endpoint of the tenant holds it and it is
//! not the subnet's gateway, network or broadcast address. The search for a free one
//! starts at a point drawn from the owner's name, not at the lowest address: hosts
//! claiming at once rarely pick the same one, and an address just released is seldom
//! handed to the next container while caches elsewhere may still name the old one
//! (in a nearly full subnet it may be).

use std::net::Ipv4Addr;

use dataplane::packet::Ipv4Cidr;
use hashbrown::HashSet;
use serde::{Deserialize, Serialize};

use crate::config::items;
use crate::config::switching::AddressSpec;
use crate::containers::short_hash;
use crate::model::{Model, Refusal};

/// A request for an address (`POST /v1/addresses`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// The tenant whose subnet it comes from.
    pub tenant: String,
    /// Who will hold it; asking again with the same owner gives the same address.
    pub owner: String,
    /// A particular address (a static one), refused if another holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Which of the tenant's subnets, as its gateway's `10.1.0.1/24` or the network
    /// `10.1.0.0/24` (default: its first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Addresses another host took meanwhile (its claim not seen here yet): a
    /// request refused for one is asked again without it.
    #[serde(skip)]
    pub avoid: Vec<Ipv4Addr>,
}

/// The address a request resolves to, with the subnet it is on (the gateway's
/// address and prefix length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The claim to record.
    pub spec: AddressSpec,
    /// Its subnet: the gateway's address and the prefix length.
    pub subnet: Ipv4Cidr,
}

fn refused(status: u16, field: &str, message: String) -> Refusal {
    Refusal {
        status,
        field: field.to_owned(),
        message,
    }
}

/// The tenant's subnet the request means.
fn subnet(model: &Model, request: &AddressRequest) -> Result<Ipv4Cidr, Refusal> {
    let tenant = model
        .tenants
        .iter()
        .find(|t| t.name == request.tenant)
        .ok_or_else(|| {
            refused(
                404,
                "tenant",
                format!("no tenant is named `{}`", request.tenant),
            )
        })?;
    let subnets: Vec<Ipv4Cidr> = tenant
        .subnets
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let wanted = match &request.subnet {
        Some(text) => Some(text.parse::<Ipv4Cidr>().map_err(|e| {
            refused(
                400,
                "subnet",
                format!("`{text}` is not an IPv4 prefix: {e}"),
            )
        })?),
        None => None,
    };
    let fits = |s: &Ipv4Cidr| match (wanted, request.ip) {
        (Some(w), _) => w.prefix == s.prefix && w.contains(s.ip),
        (None, Some(ip)) => s.contains(ip),
        (None, None) => true,
    };
    subnets
        .into_iter()
        .find(fits)
        .ok_or_else(|| match (&request.subnet, request.ip) {
            (Some(text), _) => refused(
                400,
                "subnet",
                format!("{text} is not one of tenant `{}`'s subnets", request.tenant),
            ),
            (None, Some(ip)) => refused(
                400,
                "ip",
                format!("{ip} is on none of tenant `{}`'s subnets", request.tenant),
            ),
            (None, None) => refused(
                400,
                "tenant",
                format!(
                    "tenant `{}` has no subnet to take addresses from (give it one)",
                    request.tenant
                ),
            ),
        })
}

/// What the owner holds already in the tenant, on the subnet asked for: a retried
/// request is answered with it.
pub fn held(model: &Model, request: &AddressRequest) -> Option<Resolved> {
    let subnet = subnet(model, request).ok()?;
    let spec = model.addresses.iter().find(|a| {
        a.tenant == request.tenant
            && a.owner == request.owner
            && a.host.is_none()
            && subnet.contains(a.ip)
            && request.ip.is_none_or(|ip| ip == a.ip)
    })?;
    Some(Resolved {
        spec: spec.clone(),
        subnet,
    })
}

/// The claim `request` makes in `model`: the address asked for if it is free, or a
/// free one; refused naming the field at fault.
pub fn resolve(model: &Model, request: &AddressRequest) -> Result<Resolved, Refusal> {
    if request.owner.trim().is_empty() {
        return Err(refused(
            400,
            "owner",
            "missing: who holds the address".to_owned(),
        ));
    }
    let subnet = subnet(model, request)?;
    let claims = model
        .addresses
        .iter()
        .filter(|a| a.tenant == request.tenant);
    let endpoints = items(&model.endpoints).filter(|e| e.tenant == request.tenant);
    let claim = |ip: Ipv4Addr| AddressSpec {
        tenant: request.tenant.clone(),
        ip,
        owner: request.owner.clone(),
        host: None,
    };
    let network = subnet.network();
    let host_mask = !subnet.mask();
    let last = Ipv4Addr::from(u32::from(network) | host_mask);
    let reserved =
        |ip: Ipv4Addr| ip == subnet.ip || (subnet.prefix < 31 && (ip == network || ip == last));
    if let Some(ip) = request.ip {
        if !subnet.contains(ip) {
            return Err(refused(
                400,
                "ip",
                format!("{ip} is not on the subnet asked for ({subnet})"),
            ));
        }
        if reserved(ip) {
            return Err(refused(
                400,
                "ip",
                format!("{ip} is the gateway, network or broadcast address of {subnet}"),
            ));
        }
        if let Some(other) = model
            .addresses
            .iter()
            .find(|a| a.tenant == request.tenant && a.ip == ip)
        {
            let place = other
                .host
                .as_deref()
                .map_or(String::new(), |h| format!(" on host `{h}`"));
            return Err(refused(
                409,
                "ip",
                format!("{ip} is already claimed by `{}`{place}", other.owner),
            ));
        }
        if let Some(e) =
            items(&model.endpoints).find(|e| e.tenant == request.tenant && e.ip == Some(ip))
        {
            return Err(refused(
                409,
                "ip",
                format!(
                    "{ip} is already the address of endpoint {} of tenant `{}`",
                    e.mac.as_deref().unwrap_or("?"),
                    request.tenant
                ),
            ));
        }
        return Ok(Resolved {
            spec: claim(ip),
            subnet,
        });
    }
    let taken: HashSet<Ipv4Addr> = claims
        .map(|a| a.ip)
        .chain(endpoints.filter_map(|e| e.ip))
        .chain(request.avoid.iter().copied())
        .collect();
    let size = u64::from(host_mask) + 1;
    let start = u64::from_str_radix(&short_hash(&[&request.tenant, &request.owner]), 16)
        .unwrap_or(0)
        % size;
    (0..size)
        .map(|i| Ipv4Addr::from(u32::from(network) + ((start + i) % size) as u32))
        .find(|ip| !reserved(*ip) && !taken.contains(ip))
        .map(|ip| Resolved {
            spec: claim(ip),
            subnet,
        })
        .ok_or_else(|| {
            refused(
                409,
                "subnet",
                format!(
                    "every address of {} is claimed (tenant `{}`)",
                    Ipv4Cidr {
                        ip: network,
                        prefix: subnet.prefix
                    },
                    request.tenant
                ),
            )
        })
}

/// Refuses a container of this host at `ip` in `tenant` (an endpoint added by hand)
/// when another host claimed that address for one of its own.
pub fn check_endpoint(model: &Model, tenant: &str, ip: Ipv4Addr) -> Result<(), Refusal> {
    match model
        .addresses
        .iter()
        .find(|a| a.tenant == tenant && a.ip == ip && a.host.is_some())
    {
        Some(other) => Err(refused(
            409,
            "ip",
            format!(
                "{ip} is already claimed by `{}` on host `{}`",
                other.owner,
                other.host.as_deref().unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}

/// The subnet (gateway address and prefix length) of tenant `tenant` that `ip` is on.
pub fn subnet_of(model: &Model, tenant: &str, ip: Ipv4Addr) -> Option<Ipv4Cidr> {
    model
        .tenants
        .iter()
        .find(|t| t.name == tenant)?
        .subnets
        .iter()
        .filter_map(|s| s.parse::<Ipv4Cidr>().ok())
        .find(|s| s.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn model() -> Model {
        let config = Config::parse(
            r#"
[[tenant]]
name = "red"
id = 100
subnets = ["10.1.0.1/29", "10.9.0.1/24"]

[[tenant]]
name = "blue"
id = 200

[[port]]
name = "c1"
backend = "ring"
role = "access"
tenant = "red"

[[endpoint]]
tenant = "red"
mac = "02:00:00:00:00:05"
ip = "10.1.0.5"
port = "c1"
"#,
            |_| None,
        )
        .unwrap();
        Model::of(&config)
    }

    fn ask(owner: &str) -> AddressRequest {
        AddressRequest {
            tenant: "red".to_owned(),
            owner: owner.to_owned(),
            ..AddressRequest::default()
        }
    }

    #[test]
    fn hands_out_each_free_address_once_then_refuses_naming_the_subnet() {
        let mut model = model();
        let mut got = Vec::new();
        // A /29 has 6 hosts: the gateway (.1) and an endpoint (.5) hold two.
        for i in 0..4 {
            let resolved = resolve(&model, &ask(&format!("c{i}"))).unwrap();
            assert_eq!(resolved.subnet.to_string(), "10.1.0.1/29");
            got.push(resolved.spec.ip);
            model.addresses.push(resolved.spec);
        }
        got.sort();
        let want: Vec<Ipv4Addr> = [2, 3, 4, 6].map(|h| Ipv4Addr::new(10, 1, 0, h)).to_vec();
        assert_eq!(got, want);
        let full = resolve(&model, &ask("c9")).unwrap_err();
        assert_eq!((full.status, full.field.as_str()), (409, "subnet"));
        assert_eq!(
            held(&model, &ask("c2")).map(|r| r.spec.owner),
            Some("c2".to_owned()),
            "a retried request finds what its owner holds"
        );
        assert!(held(&model, &ask("c9")).is_none());
    }

    #[test]
    fn a_static_address_is_refused_naming_the_field_when_it_is_not_free() {
        let mut model = model();
        let static_ip = |ip: [u8; 4]| AddressRequest {
            ip: Some(Ipv4Addr::from(ip)),
            ..ask("s")
        };
        for (ip, status, field) in [
            ([10, 1, 0, 5], 409, "ip"),
            ([10, 1, 0, 1], 400, "ip"),
            ([10, 1, 0, 7], 400, "ip"),
            ([10, 2, 0, 7], 400, "ip"),
        ] {
            let e = resolve(&model, &static_ip(ip)).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_str()),
                (status, field),
                "{ip:?}: {e:?}"
            );
        }
        let ok = resolve(&model, &static_ip([10, 9, 0, 77])).unwrap();
        assert_eq!(ok.subnet.to_string(), "10.9.0.1/24");
        model.addresses.push(AddressSpec {
            host: Some("h2".to_owned()),
            ..ok.spec
        });
        let e = resolve(&model, &static_ip([10, 9, 0, 77])).unwrap_err();
        assert!(e.message.contains("host `h2`"), "{e:?}");
        let e = resolve(
            &model,
            &AddressRequest {
                tenant: "blue".into(),
                ..ask("b")
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "tenant");
        let e = resolve(
            &model,
            &AddressRequest {
                tenant: "green".into(),
                ..ask("g")
            },
        )
        .unwrap_err();
        assert_eq!((e.status, e.field.as_str()), (404, "tenant"));
        let e = resolve(
            &model,
            &AddressRequest {
                subnet: Some("10.7.0.0/24".into()),
                ..ask("x")
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "subnet");
        let elsewhere = AddressRequest {
            subnet: Some("10.1.0.0/29".into()),
            ..static_ip([10, 9, 0, 78])
        };
        let e = resolve(&model, &elsewhere).unwrap_err();
        assert_eq!((e.status, e.field.as_str()), (400, "ip"), "{e:?}");
        let e = resolve(&model, &ask(" ")).unwrap_err();
        assert_eq!(e.field, "owner");
    }

    #[test]
    fn the_subnet_may_be_named_by_its_network_and_avoided_addresses_are_skipped() {
        let model = model();
        let on = AddressRequest {
            subnet: Some("10.9.0.0/24".to_owned()),
            ..ask("n")
        };
        let first = resolve(&model, &on).unwrap().spec.ip;
        assert!(Ipv4Cidr {
            ip: Ipv4Addr::new(10, 9, 0, 0),
            prefix: 24
        }
        .contains(first));
        let again = resolve(
            &model,
            &AddressRequest {
                avoid: vec![first],
                ..on
            },
        )
        .unwrap();
        assert_ne!(again.spec.ip, first);
    }
}
