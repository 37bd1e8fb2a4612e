"""Settings for tests that run on every rank of an MPI job.

A test that fails on one rank while the others go on would leave them
waiting in the next collective operation, so a failure aborts the whole job.
"""

import sys

import pytest

MPI = pytest.importorskip("mpi4py.MPI")


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.mpi)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    comm = MPI.COMM_WORLD
    if report.failed and comm.Get_size() > 1:
        sys.stderr.write(
            f"\nrank {comm.Get_rank()}: {item.nodeid} failed, aborting the MPI job\n"
            f"{report.longreprtext}\n"
        )
        sys.stderr.flush()
        comm.Abort(1)


@pytest.fixture
def comm():
    return MPI.COMM_WORLD
