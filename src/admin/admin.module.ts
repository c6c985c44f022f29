import { Module } from '@nestjs/common';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { StatusController } from './status.controller';

/** The operator's window on the agent: read-only HTTP on the admin listener. Nothing imports it. */
@Module({ imports: [HeartbeatModule], controllers: [StatusController] })
export class AdminModule {}
