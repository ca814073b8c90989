#!/usr/bin/python3
"""Third-party RTSP server for camrec's end-to-end tests: GStreamer's gst-rtsp-server serving MP4
clips in a seamless loop (timestamps keep increasing across loops, like a live camera).

Mounts: /h264 (H.264 + AAC), /h265 (H.265 + AAC), /h264v (H.264 only).
Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).

Looping: qtdemux is put in segment mode (SEGMENT seek flag) so reaching the end of the file
posts SEGMENT_DONE instead of EOS; the media then seeks back to 0 without flushing, so running
time continues. The server's own PLAY seek is rewritten to carry the SEGMENT flag too.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)


class LoopingMedia(GstRtspServer.RTSPMedia):
    def do_handle_message(self, message):
        if message.type == Gst.MessageType.SEGMENT_DONE:
            demux = self.get_element().get_by_name("demux")
            demux.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
            return True
        return GstRtspServer.RTSPMedia.do_handle_message(self, message)


def configure_looping(_factory, media):
    demux = media.get_element().get_by_name("demux")

    def rewrite_seek(_pad, info):
        event = info.get_event()
        if event.type != Gst.EventType.SEEK:
            return Gst.PadProbeReturn.OK
        rate, fmt, flags, start_type, start, stop_type, stop = event.parse_seek()
        if flags & Gst.SeekFlags.SEGMENT:
            return Gst.PadProbeReturn.OK
        segment_seek = Gst.Event.new_seek(rate, fmt, flags | Gst.SeekFlags.SEGMENT, start_type, start, stop_type, stop)
        segment_seek.set_seqnum(event.get_seqnum())
        demux.send_event(segment_seek)
        return Gst.PadProbeReturn.DROP

    demux.connect("pad-added", lambda _el, pad: pad.add_probe(Gst.PadProbeType.EVENT_UPSTREAM, rewrite_seek))
    media.connect(
        "prepared",
        lambda _m: demux.seek(
            1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1
        ),
    )


def pipeline(path, codec, audio):
    parse, pay = {"h264": ("h264parse", "rtph264pay"), "h265": ("h265parse", "rtph265pay")}[codec]
    launch = (
        f"( filesrc location={path} ! qtdemux name=demux "
        f"demux.video_0 ! queue ! {parse} ! {pay} name=pay0 pt=96 config-interval=-1 "
    )
    if audio:
        launch += "demux.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 "
    return launch + ")"


def factory(launch, role):
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(launch)
    f.set_shared(True)
    f.set_media_gtype(LoopingMedia)
    f.connect("media-configure", configure_looping)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role(role, "media.factory.access", True)
    permissions.add_permission_for_role(role, "media.factory.construct", True)
    f.set_permissions(permissions)
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", default="8554")
    ap.add_argument("--h264", required=True, help="H.264+AAC mp4 clip")
    ap.add_argument("--h265", required=True, help="H.265+AAC mp4 clip")
    ap.add_argument("--auth", choices=["none", "digest", "basic"], default="none")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="secret")
    args = ap.parse_args()

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    server.set_backlog(1024)
    role = "viewer"
    if args.auth == "none":
        # An anonymous default token carrying the role: no challenge is ever sent.
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", role)
        auth.set_default_token(token)
        server.set_auth(auth)
    else:
        # No default token: anonymous clients get a 401 challenge, then authenticate.
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", role)
        if args.auth == "digest":
            auth.add_digest(args.user, args.password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        server.set_auth(auth)
    mounts = server.get_mount_points()
    mounts.add_factory("/h264", factory(pipeline(args.h264, "h264", True), role))
    mounts.add_factory("/h265", factory(pipeline(args.h265, "h265", True), role))
    mounts.add_factory("/h264v", factory(pipeline(args.h264, "h264", False), role))
    if server.attach(None) == 0:
        print("failed to bind", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}/", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
