from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.support.fixtures", "tests.support.seeds"]

# Property tests check values, not speed: on a loaded machine (CI, a parallel CPU hog) Hypothesis'
# default 200 ms deadline per example and its "too slow" health check fail tests by chance.
settings.register_profile("p2pstore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("p2pstore")
