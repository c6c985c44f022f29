import { IsISO8601, IsString, Matches } from '../common/class-validator';
import { CLOSURE_PATTERN, ROLLOUT_ID_PATTERN } from './rollout';

/** PROTOCOL §8 `200` body, snake_case. */
export class DispatchOrder {
  @IsString()
  hostname!: string;

  @IsString()
  @Matches(ROLLOUT_ID_PATTERN, { message: 'rollout_id must look like <channel>@<channelRef>' })
  rollout_id!: string;

  // A basename only: an absolute or relative path here could point the
  // activation anywhere on the host.
  @IsString()
  @Matches(CLOSURE_PATTERN, { message: 'target_closure must be a store path basename (<hash>-<name>)' })
  target_closure!: string;

  @IsISO8601({ strict: true })
  soak_due_at!: string;

  @IsISO8601({ strict: true })
  enqueued_at!: string;
}
