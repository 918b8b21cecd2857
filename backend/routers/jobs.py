"""Jobs: submit, list, follow and cancel."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from backend import contract
from backend.contract import GroupState
from backend.dependencies import ServiceDep, require_token
from backend.routers import TOKEN_ERRORS, errors
from backend.schemas import JobGroupStatus, JobRequest, SubmittedJob

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)


@router.post(contract.JOBS, response_model=SubmittedJob, status_code=202,
             responses=errors({400: "Unknown boundary or processor, or no processors"}))
def submit_job(service: ServiceDep, job: JobRequest) -> SubmittedJob:
    """Run processors for a boundary. Datasets already in the package are SKIPPED unless
    `replace` is true; a dataset another job is producing is followed, not produced twice."""
    return SubmittedJob(job_id=service.queue.submit(boundary_name=job.boundary_name, processors=job.processors, replace=job.replace))


@router.get(contract.JOBS, response_model=list[JobGroupStatus])
def list_jobs(
    service: ServiceDep,
    boundary_name: str | None = Query(None, description="Only jobs for this boundary"),
    state: GroupState | None = Query(None, description="Only jobs in this `job_group_state`"),
    limit: int = Query(50, ge=1, le=1000, description="At most this many, newest first"),
) -> list[dict]:
    """Recent jobs, newest first."""
    return service.queue.jobs(boundary_name=boundary_name, state=state, limit=limit)


@router.get(contract.JOB, response_model=JobGroupStatus, responses=errors({404: "No such job"}))
async def job_status(service: ServiceDep, job_id: str) -> dict:
    # Every client polls this. With the local SQLite queue it is answered on the event loop: on
    # worker threads each of its reads (one per processor) waits for the GIL the loop holds (under
    # 200 connections: p50 0.74 s, against 0.29 s here). A write (the finished job's provenance)
    # or Redis round trips go to a worker thread.
    queue = service.queue
    status = queue.status_from_reads(job_id) if queue.reads_are_local else None
    return status if status is not None else await run_in_threadpool(queue.status, job_id)


@router.delete(contract.JOB, response_model=JobGroupStatus, responses=errors({404: "No such job"}))
def cancel_job(service: ServiceDep, job_id: str) -> dict:
    """Cancel: pending processors are REVOKED, running ones stop at their next progress check."""
    return service.queue.cancel(job_id)
