//! EXPOSE port specifications (`80`, `53/udp`, `8000-8010/tcp`), parsed as
//! BuildKit's `convert_expose.go` does, including its tolerance of host
//! parts (which only earn a warning).

/// A parsed EXPOSE word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// `port/proto` entries (ranges expanded, protocol lower-cased).
    pub ports: Vec<String>,
    /// The protocol was not written in lower case.
    pub proto_not_lowercase: bool,
    /// An IP address or host port was given.
    pub has_host_part: bool,
}

/// Parses `[ip:][hostPort:]containerPort[-end][/proto]`.
pub(crate) fn parse(raw: &str) -> Result<Parsed, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host_port, container) = match parts.as_slice() {
        [c] => (String::new(), "", *c),
        [h, c] => (String::new(), *h, *c),
        [rest @ .., h, c] => (rest.join(":"), *h, *c),
        [] => (String::new(), "", ""),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    let invalid = |why: &str| format!("invalid port: {raw:?}: {why}");
    if port.is_empty() {
        return Err(invalid("no port specified"));
    }
    let proto_lower = proto.to_lowercase();
    let proto_out = match proto_lower.as_str() {
        "" => "tcp".to_string(),
        "tcp" | "udp" | "sctp" => proto_lower.clone(),
        _ => return Err(invalid(&format!("invalid proto: {proto}"))),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let (start, end) = range(port).map_err(|e| format!("invalid containerPort: {port} ({e})"))?;
    if !host_port.is_empty() {
        let (hs, he) = range(host_port).map_err(|e| format!("invalid hostPort: {host_port} ({e})"))?;
        if end - start != he - hs && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host_port}"
            ));
        }
    }
    Ok(Parsed {
        ports: (start..=end).map(|p| format!("{p}/{proto_out}")).collect(),
        proto_not_lowercase: proto != proto_lower,
        has_host_part: !ip.is_empty() || !host_port.is_empty(),
    })
}

fn range(spec: &str) -> Result<(u32, u32), String> {
    let (start, end) = match spec.split_once('-') {
        Some((s, e)) => (s, Some(e)),
        None => (spec, None),
    };
    let start_port = number(start)?;
    match end {
        Some(e) if e != start => {
            let end_port = number(e)?;
            if end_port < start_port {
                return Err(format!("invalid port range: {spec}"));
            }
            Ok((start_port, end_port))
        }
        _ => Ok((start_port, start_port)),
    }
}

fn number(s: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Err("value is empty".to_string());
    }
    let digits = s.strip_prefix('+').unwrap_or(s);
    match digits.parse::<u32>() {
        Ok(n) if n <= 65535 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        Ok(_) => Err("value out of range (0–65535)".to_string()),
        Err(_) => Err(format!("invalid syntax {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn ports(raw: &str) -> Vec<String> {
        parse(raw).map(|p| p.ports).unwrap_or_default()
    }

    #[test]
    fn forms() {
        assert_eq!(ports("80"), vec!["80/tcp"]);
        assert_eq!(ports("53/UDP"), vec!["53/udp"]);
        assert_eq!(ports("8000-8002"), vec!["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert!(parse("53/UDP").is_ok_and(|p| p.proto_not_lowercase));
        assert!(parse("127.0.0.1:80:80").is_ok_and(|p| p.has_host_part));
        assert!(parse("8080:80").is_ok_and(|p| p.has_host_part && p.ports == vec!["80/tcp"]));
    }

    #[test]
    fn errors() {
        for bad in ["", "/tcp", "80/icmp", "70000", "x", "90-80", "1.2.3:80:80"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
