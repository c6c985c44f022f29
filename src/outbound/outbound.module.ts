import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { REPLAY_PORT } from '../recovery/recovery.ports';
import { EMIT_EVENT_PORT } from '../reducer/reducer.ports';
import { DrainerService } from './drainer.service';
import { EventLogService } from './event-log.service';
import { EVENT_LOG_FS } from './outbound.constants';
import { OutboundPorts } from './outbound.ports';
import { nodeLogFs } from './log-fs';

/** The durable event log, its drainer to the CP, and replay. */
@Module({
  imports: [JobsModule],
  providers: [
    { provide: EVENT_LOG_FS, useValue: nodeLogFs },
    EventLogService,
    DrainerService,
    OutboundPorts,
    { provide: EMIT_EVENT_PORT, useExisting: OutboundPorts },
    { provide: REPLAY_PORT, useExisting: OutboundPorts },
  ],
  exports: [EventLogService, DrainerService, EMIT_EVENT_PORT, REPLAY_PORT],
})
export class OutboundModule {}
