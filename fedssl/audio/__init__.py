"""The audio modality (``data.modality = "audio"``): views, device data and probe tasks for audio clips.

Reading files lives in :mod:`fedssl.data.audio`, the generated corpus in
:mod:`fedssl.data.audio_corpus`, the log-mel front end in :mod:`fedssl.models.frontend`; the
modality registry (:mod:`fedssl.modality`) ties them to the run config.
"""
