from django.db.migrations.loader import MigrationLoader


def test_swapped_machine_model_migrates_before_the_toolkit():
    loader = MigrationLoader(None)
    plan = loader.graph.forwards_plan(("oauth2_provider", "0001_initial"))

    assert ("clients", "0001_initial") in plan
    assert plan.index(("clients", "0001_initial")) < plan.index(("oauth2_provider", "0001_initial"))
