"""The video modality (``data.modality = "video"``): views, device data, encoders and probe tasks for clips.

Reading files lives in :mod:`fedssl.data.video`, the generated corpus in :mod:`fedssl.data.video_corpus`,
the video pretext tasks in :mod:`fedssl.ssl` (``playback-speed``, ``catch-the-patch``); the modality
registry (:mod:`fedssl.modality`) ties them to the run config.
"""
