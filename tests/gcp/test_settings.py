"""MODEL_URI=gs://... read from the environment: what is refused before anything starts."""

from __future__ import annotations

import pytest

from functions.config import ConfigError, Settings


def test_gs_uri_without_a_bucket_is_refused_at_start():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MODEL_URI": "gs:///digits/1/"})
    assert str(caught.value) == ("MODEL_URI must name a bucket: gs://BUCKET/PREFIX/, "
                                 "got 'gs:///digits/1/'")


def test_gs_uri_is_kept_as_given():
    settings = Settings.from_env({"MODEL_URI": "gs://models/digits/1/",
                                  "MODEL_CACHE_DIR": "/tmp/m"})
    assert (settings.model_uri, settings.model_cache_dir) == ("gs://models/digits/1/", "/tmp/m")
