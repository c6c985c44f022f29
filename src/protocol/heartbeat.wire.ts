import { IsArray, IsISO8601, IsOptional, IsString, ValidateIf } from 'class-validator';

/** PROTOCOL §2 request body. snake_case on the wire. */
export interface HeartbeatRequest {
  hostname: string;
  /** Always absent from the agent: every heartbeat keeps the boot-recovery shape. */
  rollout_id?: string;
  current_closure?: string;
  at: string;
  agent_version: string;
  uptime_secs: number;
  last_event_seq_by_rollout: Record<string, number>;
}

/**
 * PROTOCOL §2 response body. Snapshots are validated one by one afterwards
 * (an invalid snapshot is dropped, not the whole answer), so here they are
 * only required to be an array.
 */
export class HeartbeatResponse {
  @IsOptional()
  @ValidateIf((_o, v) => v !== null)
  @IsString()
  @IsISO8601({ strict: true })
  received_at?: string | null;

  @IsOptional()
  @IsArray()
  bootstrap_rollouts?: unknown[];
}
