import { Module } from '@nestjs/common';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { HealthService } from './health.service';

/** Liveness and readiness, judged from the jobs' own progress. */
@Module({ imports: [HeartbeatModule], providers: [HealthService], exports: [HealthService] })
export class HealthModule {}
