"""app/pid.py: the cached process id follows a fork."""

import os

from app import pid


def test_the_cached_pid_is_the_process_id_before_and_after_a_fork() -> None:
    assert pid.current() == os.getpid()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports what it sees, then leaves at once
        os.write(writer, f"{pid.current()} {os.getpid()}".encode())
        os._exit(0)
    os.close(writer)
    seen, actual = os.read(reader, 100).decode().split()
    os.waitpid(child, 0)
    assert seen == actual == str(child)
    assert pid.current() == os.getpid()
