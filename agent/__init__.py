"""callagent: a WebRTC test-call agent counting DTLS rehandshakes and ICE restarts."""

__version__ = "0.1.0"
