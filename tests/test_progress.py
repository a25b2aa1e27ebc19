"""The progress protocol of long jobs: a bar on a terminal, one final line elsewhere."""

import io
import re

from surrogate.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_messages_and_one_final_line():
    log = io.StringIO()
    with Progress(5, desc="job", unit="points", stream=log, done=2) as p:
        p.say("resuming")
        for _ in range(3):
            p.update()
    lines = log.getvalue().splitlines()
    assert lines[0] == "job: resuming"
    assert len(lines) == 2 and lines[1].startswith("job: 5/5 points (100.0%), ")


def test_a_log_gets_a_line_every_period():
    log = io.StringIO()
    with Progress(1000, desc="sweep", unit="points", stream=log, every=0.0) as p:
        for _ in range(4):
            p.update(250)
    lines = log.getvalue().splitlines()
    assert [line.split(" points")[0] for line in lines] == [
        "sweep: 250/1000", "sweep: 500/1000", "sweep: 750/1000", "sweep: 1000/1000"]
    assert re.search(r"points/s, ETA \d+:\d\d:\d\d$", lines[0]), lines[0]


def test_an_interrupted_job_prints_no_final_line():
    log = io.StringIO()
    with Progress(5, desc="job", stream=log) as p:
        p.update(2)
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar_and_a_disabled_job_nothing():
    tty = Terminal()
    with Progress(4, desc="job", unit="points", stream=tty) as p:
        p.update(4)
    assert "4/4" in tty.getvalue() and "points" in tty.getvalue()
    quiet = Terminal()
    with Progress(4, desc="job", stream=quiet, enabled=False) as p:
        p.say("hello")
        p.update(4)
    assert quiet.getvalue() == ""
