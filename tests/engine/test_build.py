"""Which build of the engine the tests run on: the compiled one when GATEWAY_TEST_BUILD says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gateway.engine.client
import gateway.engine.server


@pytest.mark.skipif(not os.environ.get("GATEWAY_TEST_BUILD"), reason="the source build")
def test_the_compiled_engine_is_the_one_under_test_here_and_in_started_processes() -> None:
    for module in (gateway.engine.server, gateway.engine.client):
        assert module.__file__ is not None and module.__file__.endswith(".so"), module.__file__
    out = subprocess.run([sys.executable, "-c", "import gateway.engine.server as s; print(s.__file__)"],
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip().endswith(".so"), out.stdout
