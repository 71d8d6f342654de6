"""The gRPC servicer: converts messages to domain calls (``convert``) and results back.

No logic of its own and no status codes: domain errors propagate to ``interceptors.ErrorMapping``.
"""

from __future__ import annotations

import os
import threading

from famos.errors import InvalidField
from famos.protos.famos.render.v1 import render_pb2 as pb
from famos.protos.famos.render.v1 import render_pb2_grpc
from famos.render_server.convert import job_message, model_message, render_event, render_request
from famos.render_server.budget import MemoryBudget
from famos.render_server.jobs import JobManager
from famos.render_server.models import ModelStore
from famos.render_server.slots import RenderSlots
from famos.render_server.stalls import StallWatch
from famos.render_server.streaming import ServerLimits, admitted, prepared, stream_render

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RenderService"].full_name
DOWNLOAD_PIECE = 1 << 20
DEFAULT_JOB_LIMIT = 100


class RenderService(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, *, models: ModelStore, jobs: JobManager, slots: RenderSlots, limits: ServerLimits,
                 stalls: StallWatch, budget: MemoryBudget):
        self.models = models
        self.budget = budget
        self.jobs = jobs
        self.slots = slots
        self.limits = limits
        self.stalls = stalls

    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[model_message(m) for m in self.models.infos()])

    def GetModel(self, request, context):
        return model_message(self.models.info(request.name))

    def Render(self, request, context):
        cancel = threading.Event()
        # fires on cancel, disconnect, deadline and normal completion alike
        context.add_callback(cancel.set)
        # a mistake, or a render that could never fit, is answered before the call waits for a worker
        admission = admitted(self.models, render_request(request), self.limits)
        self.budget.check_fits(admission.estimate)
        with self.slots.slot(cancel=cancel):
            # a waiting stream holds no memory: it reserves once it has a worker, before the content is
            # decoded, and gives it back however the call ends
            with self.budget.holding(wait=False) as memory:
                memory.take(admission.estimate)
                events = stream_render(prepared(admission, self.limits), cancel=cancel, piece_bytes=self.limits.piece_bytes)
                for event in self.stalls.guarded(events, context=context, cancel=cancel):
                    yield render_event(event)

    def SubmitJob(self, request, context):
        job = self.jobs.submit(render_request(request.render, request.tiff), output_name=request.output_name)
        return job_message(job)

    def WatchJob(self, request, context):
        for job in self.jobs.watch(request.id, active=context.is_active):
            yield job_message(job)

    def CancelJob(self, request, context):
        return job_message(self.jobs.cancel(request.id))

    def ListJobs(self, request, context):
        if request.limit < 0:
            raise InvalidField("limit", f"{request.limit} is negative")
        return pb.ListJobsResponse(jobs=[job_message(j) for j in self.jobs.list(request.limit or DEFAULT_JOB_LIMIT)])

    def DownloadJob(self, request, context):
        path = self.jobs.result_path(request.id)
        with open(path, "rb") as fh:
            total = os.fstat(fh.fileno()).st_size
            offset = 0
            while context.is_active() and (data := fh.read(DOWNLOAD_PIECE)):
                yield pb.FileChunk(offset=offset, data=data, total_size=total)
                offset += len(data)
