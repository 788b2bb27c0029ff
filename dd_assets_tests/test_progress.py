"""Progress while a stage runs: structured events in the run's event log, final figures in the metadata."""

from __future__ import annotations

import dagster as dg

from dd_assets import DataDesignerResource, Stage, Workflow
from dd_assets_tests.helpers import llm_builder, materialize, metadata_of, sampler_builder


def test_a_running_stage_reports_structured_progress_and_its_final_figures(io_manager, instance, llm, llm_resource):
    resource = DataDesignerResource(
        model_providers=llm_resource.model_providers, progress_every_s=0.4, run_config={"buffer_size": 5}
    )
    workflow = Workflow(
        name="prog",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=30),
            Stage(name="write", config=llm_builder("text", "Write about {{ n }}"), depends_on=["seed"]),
        ],
    )
    llm.delay_s = 0.12  # 30 requests, two at a time: about 2 s of generation
    result = materialize(workflow, io_manager, instance, resource=resource)
    assert result.success

    events = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    reports = [
        e.event_log_entry.dagster_event
        for e in events
        if "stage 'write'" in (e.event_log_entry.dagster_event.message or "")
        and "records/s" in (e.event_log_entry.dagster_event.message or "")
    ]
    assert len(reports) >= 2, [r.message for r in reports]
    figures = [{k: v.value for k, v in r.engine_event_data.metadata.items()} for r in reports]
    done = [f["dd_assets/progress/records_done"] for f in figures]
    assert done == sorted(done) and done[-1] > 0
    assert all(f["dd_assets/progress/records_total"] == 30 for f in figures)
    assert all(f["dd_assets/progress/batches_total"] == 6 for f in figures)
    assert figures[-1]["dd_assets/progress/requests_succeeded"] > 0
    assert any("dd_assets/progress/seconds_left" in f for f in figures)
    assert reports[0].step_key == "prog__write"

    final = metadata_of(result, ["prog", "write"])
    assert final["dd_assets/batches"] == 6
    assert final["dd_assets/requests_succeeded"] == 30 and final["dd_assets/requests_failed"] == 0
    assert final["dd_assets/records_per_second"] > 0


def test_progress_can_be_turned_off(io_manager, instance, llm_resource):
    resource = DataDesignerResource(model_providers=llm_resource.model_providers, progress_every_s=0)
    workflow = Workflow(name="quiet", stages=[Stage(name="seed", config=sampler_builder(), num_records=10)])
    result = materialize(workflow, io_manager, instance, resource=resource)
    events = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    assert not [e for e in events if "records/s" in (e.event_log_entry.dagster_event.message or "")]
    assert metadata_of(result, ["quiet", "seed"])["dd_assets/batches"] == 1
