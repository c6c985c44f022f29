import { Module } from '@nestjs/common';
import { CommsModule } from '../comms/comms.module';
import { JobsModule } from '../jobs/jobs.module';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { EVENT_HISTORY_PORT, REPLAY_PORT } from '../recovery/recovery.ports';
import { serveEffectPort } from '../reducer/effect-ports';
import { ReducerModule } from '../reducer/reducer.module';
import { DrainerService } from './drainer.service';
import { EventLogService } from './event-log.service';
import { DELIVERY_PACING, DELIVERY_PACING_SETTINGS, EVENT_LOG_FS } from './outbound.constants';
import { OutboundPorts } from './outbound.ports';
import { OutboundStatusContributor } from './outbound.status';
import { nodeLogFs } from './log-fs';

/**
 * The durable event log, its drainer to the CP, and replay. It serves the
 * reducer's EmitEvent port and provides recovery's ports (replay, and the
 * history the reducer is rebuilt from).
 */
@Module({
  imports: [ReducerModule, CommsModule, LifecycleModule, JobsModule],
  providers: [
    { provide: EVENT_LOG_FS, useValue: nodeLogFs },
    { provide: DELIVERY_PACING_SETTINGS, useValue: DELIVERY_PACING },
    EventLogService,
    DrainerService,
    OutboundPorts,
    serveEffectPort('EmitEvent', OutboundPorts),
    { provide: REPLAY_PORT, useExisting: OutboundPorts },
    { provide: EVENT_HISTORY_PORT, useExisting: OutboundPorts },
    OutboundStatusContributor,
  ],
  exports: [EventLogService, DrainerService, REPLAY_PORT, EVENT_HISTORY_PORT, OutboundStatusContributor],
})
export class OutboundModule {}
