//! SDP for a fake camera's DESCRIBE answer, written with `sdp-types`: one H.264 (RFC 6184) or
//! H.265 (RFC 7798) video stream and optionally one AAC stream (RFC 3640 `mpeg4-generic`,
//! AAC-hbr), each with a relative `a=control:trackID=N` resolved against Content-Base.

use base64::Engine as _;
use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};

use super::clip::{Clip, StreamKind, VideoCodec, VIDEO_CLOCK_HZ};
use super::rtp::{PAYLOAD_TYPE_AUDIO, PAYLOAD_TYPE_VIDEO};

/// The `a=control` value of a stream, relative to the camera's Content-Base.
pub fn control(kind: StreamKind) -> String {
    format!("trackID={}", kind as usize)
}

fn attr(name: &str, value: impl Into<String>) -> Attribute {
    Attribute { attribute: name.to_owned(), value: Some(value.into()) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes the session description of camera `camera_index` (`session_id` goes in `o=`); without
/// `sprop`, the video fmtp leaves out the parameter sets (they are sent in-band anyway).
pub fn describe(clip: &Clip, camera_index: usize, session_id: u64, sprop: bool) -> Vec<u8> {
    let fmtp_video = match &clip.video {
        VideoCodec::H264 { sps, .. } if !sprop => {
            let profile_level_id = sps.get(1..4).map(hex).unwrap_or_else(|| "42e01f".to_owned());
            format!("{PAYLOAD_TYPE_VIDEO} packetization-mode=1;profile-level-id={profile_level_id}")
        }
        VideoCodec::H265 { .. } if !sprop => PAYLOAD_TYPE_VIDEO.to_string(),
        VideoCodec::H264 { sps, pps } => {
            let profile_level_id = sps.get(1..4).map(hex).unwrap_or_else(|| "42e01f".to_owned());
            format!(
                "{PAYLOAD_TYPE_VIDEO} packetization-mode=1;profile-level-id={profile_level_id};\
                 sprop-parameter-sets={},{}",
                b64(sps),
                b64(pps)
            )
        }
        VideoCodec::H265 { vps, sps, pps } => format!(
            "{PAYLOAD_TYPE_VIDEO} sprop-vps={};sprop-sps={};sprop-pps={}",
            b64(vps),
            b64(sps),
            b64(pps)
        ),
    };
    let encoding = match clip.video {
        VideoCodec::H264 { .. } => "H264",
        VideoCodec::H265 { .. } => "H265",
    };
    let mut medias = vec![Media {
        media: "video".into(),
        port: 0,
        num_ports: None,
        proto: "RTP/AVP".into(),
        fmt: PAYLOAD_TYPE_VIDEO.to_string(),
        media_title: None,
        connections: vec![],
        bandwidths: vec![],
        key: None,
        attributes: vec![
            attr("rtpmap", format!("{PAYLOAD_TYPE_VIDEO} {encoding}/{VIDEO_CLOCK_HZ}")),
            attr("fmtp", fmtp_video),
            attr("control", control(StreamKind::Video)),
        ],
    }];
    if let Some(audio) = &clip.audio {
        medias.push(Media {
            media: "audio".into(),
            port: 0,
            num_ports: None,
            proto: "RTP/AVP".into(),
            fmt: PAYLOAD_TYPE_AUDIO.to_string(),
            media_title: None,
            connections: vec![],
            bandwidths: vec![],
            key: None,
            attributes: vec![
                attr(
                    "rtpmap",
                    format!("{PAYLOAD_TYPE_AUDIO} MPEG4-GENERIC/{}/{}", audio.clock_hz, audio.channels),
                ),
                attr(
                    "fmtp",
                    format!(
                        "{PAYLOAD_TYPE_AUDIO} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;\
                         indexlength=3;indexdeltalength=3;config={}",
                        hex(&audio.config)
                    ),
                ),
                attr("control", control(StreamKind::Audio)),
            ],
        });
    }
    let session = Session {
        origin: Origin {
            username: None,
            sess_id: session_id.to_string(),
            sess_version: 1,
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            unicast_address: "0.0.0.0".into(),
        },
        session_name: format!("camrec fake camera {camera_index}"),
        session_description: None,
        uri: None,
        emails: vec![],
        phones: vec![],
        connection: Some(Connection {
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            connection_address: "0.0.0.0".into(),
        }),
        bandwidths: vec![],
        times: vec![Time { start_time: 0, stop_time: 0, repeats: vec![] }],
        time_zones: vec![],
        key: None,
        attributes: vec![attr("control", "*"), attr("range", "npt=now-")],
        medias,
    };
    let mut out = Vec::with_capacity(1024);
    // Writing into a Vec cannot fail.
    let _ = session.write(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::clip::{H264_AAC_MP4, H265_AAC_MP4};
    use super::*;
    use bytes::Bytes;

    #[test]
    fn fake_sdp_round_trips_through_parser() {
        for (bytes, enc) in [(H264_AAC_MP4, "H264/90000"), (H265_AAC_MP4, "H265/90000")] {
            let clip = Clip::parse(Bytes::from_static(bytes)).expect("clip");
            let sdp = describe(&clip, 3, 42, true);
            let parsed = Session::parse(&sdp).expect("valid sdp");
            assert_eq!(parsed.medias.len(), 2);
            let v = &parsed.medias[0];
            assert!(v.get_first_attribute_value("rtpmap").ok().flatten().is_some_and(|r| r.ends_with(enc)));
            assert_eq!(v.get_first_attribute_value("control").ok().flatten(), Some("trackID=0"));
            let a = &parsed.medias[1];
            let fmtp = a.get_first_attribute_value("fmtp").ok().flatten().expect("fmtp");
            assert!(fmtp.contains("mode=AAC-hbr") && fmtp.contains("sizelength=13"), "{fmtp}");
            assert!(fmtp.contains("config=1188"), "48 kHz mono AAC-LC: {fmtp}");
        }
    }
}
