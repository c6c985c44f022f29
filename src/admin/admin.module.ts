import { Module } from '@nestjs/common';
import { StatusController } from './status.controller';

/** The operator's window on the agent: read-only HTTP on the admin listener. */
@Module({ controllers: [StatusController] })
export class AdminModule {}
