import { Module } from '@nestjs/common';
import { ActivationModule } from '../activation/activation.module';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { OutboundModule } from '../outbound/outbound.module';
import { StatusController } from './status.controller';

/** The operator's window on the agent: read-only HTTP on the admin listener. Nothing imports it. */
@Module({ imports: [HeartbeatModule, OutboundModule, ActivationModule], controllers: [StatusController] })
export class AdminModule {}
