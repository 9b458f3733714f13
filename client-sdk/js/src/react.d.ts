import type { ReactNode, ReactElement } from 'react';
import type {
  ConnectionState,
  CursorInput,
  PresenceChange,
  PresenceMember,
  Tidewire,
  TidewireError,
  TidewireEvent,
  TidewireOptions,
} from './index.js';

export type TidewireProviderProps =
  | { client: Tidewire; url?: never; options?: never; children?: ReactNode }
  | { client?: never; url: string; options?: TidewireOptions; children?: ReactNode };

/** Holds one client for everything below it: yours (`client`; you close it) or one made from
 * `url` + `options`, connected while mounted and closed on unmount. */
export declare function TidewireProvider(props: TidewireProviderProps): ReactElement;

/** The provider's client. */
export declare function useTidewire(): Tidewire;

/** The connection state, re-rendering on change. */
export declare function useConnectionState(): ConnectionState;

export interface UseChannelOptions {
  since?: CursorInput;
  last?: number;
  onJoin?: (info: PresenceChange) => void;
  onLeave?: (info: PresenceChange) => void;
}

export interface ChannelStatus {
  subscribed: boolean;
  recovered: boolean | undefined;
  error: TidewireError | null;
}

/** Subscribed while mounted (a falsy channel: nothing); onEvent may change freely. */
export declare function useChannel<T = unknown>(
  channel: string | null | undefined,
  onEvent: (event: TidewireEvent<T>) => void,
  opts?: UseChannelOptions
): ChannelStatus;

/** The channel's events, oldest first, at most `limit` (100); filled first with the newest
 * `last` (default: limit). */
export declare function useChannelEvents<T = unknown>(
  channel: string | null | undefined,
  opts?: { limit?: number; last?: number }
): TidewireEvent<T>[];

/** The channel's members, fetched on each (re)connect and kept current by join/leave. */
export declare function usePresence(channel: string | null | undefined): {
  members: PresenceMember[];
  error: TidewireError | null;
};
