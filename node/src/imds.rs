//! Node identity from the EC2 instance metadata service (IMDSv2): the instance id becomes the
//! Raft node id (hashed to 63 bits: ids are `i-` + 17 hex digits, more than a u64 holds) and the
//! availability zone becomes the node's AZ label, so an Auto Scaling group's identical instances
//! need no per-instance config.

use std::time::Duration;

use anyhow::Context;

/// IMDS token lifetime requested (seconds); only used for the two reads at start-up.
const TOKEN_TTL_S: u32 = 60;
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);

/// What the instance says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub az: String,
}

/// Reads the instance id and AZ with IMDSv2 (a PUT for a session token, then GETs carrying it).
pub async fn fetch_identity(endpoint: &str) -> anyhow::Result<InstanceIdentity> {
    let http = reqwest::Client::builder().timeout(IMDS_TIMEOUT).build()?;
    let base = endpoint.trim_end_matches('/');
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_S.to_string())
        .send()
        .await
        .with_context(|| format!("IMDSv2 token from {base} (is this an EC2 instance with IMDS enabled?)"))?
        .error_for_status()?
        .text()
        .await?;
    let get = |path: &'static str| {
        let http = http.clone();
        let token = token.clone();
        async move {
            http.get(format!("{base}/latest/meta-data/{path}"))
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await
                .with_context(|| format!("IMDS {path}"))?
                .error_for_status()
                .with_context(|| format!("IMDS {path}"))?
                .text()
                .await
                .with_context(|| format!("IMDS {path}"))
        }
    };
    let instance_id = get("instance-id").await?.trim().to_string();
    let az = get("placement/availability-zone").await?.trim().to_string();
    anyhow::ensure!(instance_id.starts_with("i-"), "IMDS returned an unexpected instance id {instance_id:?}");
    Ok(InstanceIdentity { instance_id, az })
}

/// Stable node id for an instance id: FNV-1a 64, top bit cleared (ids stay positive in JSON
/// tools that read numbers as i64), never 0.
pub fn node_id_for(instance_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h & (u64::MAX >> 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let a = node_id_for("i-0123456789abcdef0");
        assert_eq!(a, node_id_for("i-0123456789abcdef0"));
        assert_ne!(a, node_id_for("i-0123456789abcdef1"));
        assert!(a > 0 && a < (1 << 63));
    }

    /// A fake IMDS that insists on the v2 token dance.
    #[actix_web::test]
    async fn reads_identity_with_imdsv2() {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        async fn token(req: HttpRequest) -> HttpResponse {
            if req.headers().contains_key("X-aws-ec2-metadata-token-ttl-seconds") {
                HttpResponse::Ok().body("TOKEN123")
            } else {
                HttpResponse::BadRequest().finish()
            }
        }
        async fn meta(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
            if req.headers().get("X-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()) != Some("TOKEN123")
            {
                return HttpResponse::Unauthorized().finish();
            }
            match path.as_str() {
                "instance-id" => HttpResponse::Ok().body("i-0abc1234def567890"),
                "placement/availability-zone" => HttpResponse::Ok().body("eu-west-1b"),
                _ => HttpResponse::NotFound().finish(),
            }
        }
        let server = HttpServer::new(|| {
            App::new()
                .route("/latest/api/token", web::put().to(token))
                .route("/latest/meta-data/{path:.*}", web::get().to(meta))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let id = fetch_identity(&format!("http://{addr}")).await.unwrap();
        assert_eq!(
            id,
            InstanceIdentity { instance_id: "i-0abc1234def567890".into(), az: "eu-west-1b".into() }
        );
        handle.stop(false).await;
    }
}
